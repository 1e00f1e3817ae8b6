"""SpectralKron: its step against the core, its options, routing and gradient guard."""

from __future__ import annotations

import copy
import inspect
import math
import warnings

import numpy as np
import pytest

from spectral_es.core import cayley_truncated, generator_norm, orthogonality_defect
from spectral_es.core.kron import kron_precondition, kron_step
from spectral_es.optim import PreconditionerWarning, SpectralKron, functional
from spectral_es.optim import optimizer as optimizer_module
from spectral_es.optim.functional import MAX_LOG_STEP
from tests.optim.conftest import make_model, torch, train_steps


def single_weight(shape=(5, 3), dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Parameter(torch.randn(*shape, dtype=dtype))


def set_gradient(param, seed):
    generator = torch.Generator().manual_seed(seed)
    param.grad = torch.randn(param.shape, generator=generator, dtype=torch.float64).to(param.dtype)
    return param.grad.clone()


def dense_curvature(state):
    """alpha (S_C kron S_K) from an optimizer state, in float64."""
    S_C = state["B_C"].double() @ torch.diag(state["d_C"].double()) @ state["B_C"].double().T
    S_K = state["B_K"].double() @ torch.diag(state["d_K"].double()) @ state["B_K"].double().T
    return state["alpha"].double() * torch.kron(S_C, S_K)


def test_step_matches_core_functions():
    # Without momentum, grafting or eps, a step is exactly the core's Kronecker
    # step on G followed by the preconditioned direction: same float64 operations.
    W = single_weight()
    options = {"lr": 0.1, "betas": (0.0, 0.999), "eps": 0.0, "graft": "none", "precondition_frequency": 1}
    optimizer = SpectralKron([W], **options, precond_lr=0.2, damping=1e-4)
    expected = W.detach().clone()
    factors = None
    for seed in range(3):
        G = set_gradient(W, seed)
        optimizer.step()
        if factors is None:
            factors = (
                torch.ones(5, dtype=torch.float64),
                torch.eye(5, dtype=torch.float64),
                torch.ones(3, dtype=torch.float64),
                torch.eye(3, dtype=torch.float64),
                G.square().mean(),
            )
        factors = kron_step(*factors, G, 0.2, method="exact", damping=1e-4, max_log_step=MAX_LOG_STEP)
        expected -= 0.1 * kron_precondition(*factors, G, 2.0)
        torch.testing.assert_close(W.detach(), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("root", [1.0, 2.0, 4.0])
def test_direction_is_inverse_root(root):
    W = single_weight((4, 3))
    optimizer = SpectralKron([W], lr=1.0, betas=(0.0, 0.999), graft="none", root=root, precondition_frequency=1)
    set_gradient(W, 0)
    optimizer.step()
    G = set_gradient(W, 1)
    before = W.detach().clone()
    optimizer.step()
    # The step used the refreshed factors: D = (S^{1/p} + eps I)^{-1} vec(G),
    # checked against a dense eigendecomposition of S in float64.
    eigenvalues, vectors = torch.linalg.eigh(dense_curvature(optimizer.state[W]))
    root_inverse = vectors @ torch.diag(1 / (eigenvalues ** (1 / root) + 1e-8)) @ vectors.T
    expected = before - (root_inverse @ G.reshape(-1)).reshape(4, 3)
    torch.testing.assert_close(W.detach(), expected, rtol=1e-9, atol=1e-12)


def test_sides_refresh_on_alternate_steps():
    W = single_weight((6, 4), dtype=torch.float32)
    optimizer = SpectralKron([W], precondition_frequency=2)
    state = optimizer.state[W]
    set_gradient(W, 0)
    optimizer.step()  # step 1: initialises alpha and refreshes both factors
    for seed, moved, kept in ((1, "K", "C"), (2, "C", "K")):
        before = {key: value.clone() for key, value in state.items()}
        set_gradient(W, seed)
        optimizer.step()
        assert torch.equal(state[f"d_{kept}"], before[f"d_{kept}"])
        assert torch.equal(state[f"B_{kept}"], before[f"B_{kept}"])
        assert not torch.equal(state[f"d_{moved}"], before[f"d_{moved}"])
        assert not torch.equal(state[f"B_{moved}"], before[f"B_{moved}"])


def test_factor_invariants_after_training():
    model = make_model()
    optimizer = SpectralKron(model.parameters(), lr=1e-2, precondition_frequency=1)
    train_steps(model, optimizer, 60)
    for param in (model[0].weight, model[3].weight):
        state = optimizer.state[param]
        assert state["alpha"].item() > 0
        for side in "CK":
            d = state[f"d_{side}"]
            assert torch.all(d > 0)
            # prod(d) = 1 is restored at each refresh: the float32 sum of
            # n <= 64 logarithms is exact to about n * 2^-24 ~ 4e-6.
            assert abs(torch.log(d).sum().item()) < 1e-4
            # Exact Cayley rotations in float32 plus a Björck step every 10
            # refreshes: defect near sqrt(n) * 2^-24 per product, < 1e-5.
            assert orthogonality_defect(state[f"B_{side}"]) < 1e-5


def least_squares(dtype, seed=0):
    """A 24 x 32 linear least-squares problem with strongly correlated inputs."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(32, 32, generator=generator) * torch.logspace(0, -2, 32)
    target = torch.randn(24, 32, generator=generator)
    W = torch.nn.Parameter(torch.zeros(24, 32, dtype=dtype))

    def loss(step):
        x = torch.randn(64, 32, generator=torch.Generator().manual_seed(1000 + step)) @ mixing
        return ((x.to(dtype) @ (W - target.to(dtype)).T).float() ** 2).mean()

    return W, loss


def test_bfloat16_run_stays_finite_and_orthogonal():
    W, loss = least_squares(torch.bfloat16)
    optimizer = SpectralKron([W], lr=3e-2, precondition_frequency=1)
    first = loss(0).item()
    for step in range(300):
        optimizer.zero_grad()
        value = loss(step)
        value.backward()
        optimizer.step()
        assert math.isfinite(value.item())
    state = optimizer.state[W]
    assert state["B_C"].dtype == torch.bfloat16
    assert loss(301).item() < 0.05 * first
    # An orthogonal matrix rounded to bfloat16 (8 significant bits) already
    # has a defect of about 0.013 at n = 24 or 32 (measured in the loop). The
    # truncated Cayley steps with a Björck step every 10 refreshes stay near
    # 0.02; without the Björck steps the defect passes 1 within 300 steps.
    generator = torch.Generator().manual_seed(0)
    for side, n in (("C", 24), ("K", 32)):
        floor = orthogonality_defect(
            torch.linalg.qr(torch.randn(n, n, generator=generator))[0].to(torch.bfloat16).float()
        )
        assert orthogonality_defect(state[f"B_{side}"].float()) < 3 * floor
        # A basis that never rotated would pass the check above with a defect
        # of 0. Here ||B - I||_F is 7.0 and 7.7 (torch 2.13 on CPU).
        distance_from_identity = torch.linalg.norm(state[f"B_{side}"].float() - torch.eye(n)).item()
        assert distance_from_identity > 3, side


# Both dtypes take the same truncated map (norm, squarings). From d = 1 the
# first refreshes rotate every pair by the Jacobi angle of gaps that
# rounding decides. Capped at Frobenius norm 0.25 (no squarings) these
# rotations stay small. With squarings or the spectral cap much more of the
# generator applies, so the two dtypes take different early bases. They
# agree again once d has separated, which 30 steps give.
@pytest.mark.parametrize(
    ("norm", "squarings", "steps"), [("frobenius", 0, 5), ("frobenius", 4, 30), ("spectral", 0, 30)]
)
def test_bfloat16_state_agrees_with_float32(norm, squarings, steps):
    updates = {}
    for state_dtype in (torch.float32, torch.bfloat16):
        W, loss = least_squares(torch.float32)
        optimizer = SpectralKron(
            [W],
            lr=1e-2,
            state_dtype=state_dtype,
            cayley="truncated",
            precondition_frequency=1,
            generator_norm=norm,
            max_cayley_squarings=squarings,
        )
        for step in range(steps):
            optimizer.zero_grad()
            loss(step).backward()
            before = W.detach().clone()
            optimizer.step()
        updates[state_dtype] = W.detach() - before
    difference = torch.linalg.norm(updates[torch.bfloat16] - updates[torch.float32])
    # bfloat16 rounds to 2^-9 relative; the step goes through about ten
    # rounded operations (gradient, momentum, four products with the bases,
    # the Cayley products, the scaling, the update), plus the factor history.
    # 0.05 is about 25 unit roundoffs.
    assert difference / torch.linalg.norm(updates[torch.float32]) < 0.05


def step_norms(W, gradients, graft):
    """Yield the norms of SpectralKron's and AdamW's steps from the same start and gradients."""
    reference = torch.nn.Parameter(W.detach().clone())
    optimizer = SpectralKron([W], lr=1e-2, graft=graft)
    adamw = torch.optim.AdamW([reference], lr=1e-2, weight_decay=0.0)
    for gradient in gradients:
        W.grad, reference.grad = gradient.clone(), gradient.clone()
        before, reference_before = W.detach().clone(), reference.detach().clone()
        optimizer.step()
        adamw.step()
        yield torch.linalg.norm(W.detach() - before), torch.linalg.norm(reference.detach() - reference_before)


def test_graft_adam_matches_adamw_step_norm():
    W = single_weight((6, 4), dtype=torch.float32)
    gradients = [torch.randn(6, 4, generator=torch.Generator().manual_seed(seed)) for seed in range(4)]
    for norm, reference_norm in step_norms(W, gradients, "adam"):
        # Same moments and formula; float32 rounding of two norms.
        torch.testing.assert_close(norm, reference_norm, rtol=1e-5, atol=0)


def test_graft_adafactor_exact_for_rank_one():
    # Gradients s_t a b^T have squares s_t^2 (a^2)(b^2)^T: every moving
    # average of them has rank one, where the factored second moment is
    # exact, so the grafted step has the AdamW step's norm.
    W = single_weight((6, 4), dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, generator=generator, dtype=torch.float64) for size in (6, 4))
    gradients = [scale * torch.outer(a, b) for scale in (1.0, -0.3, 2.5, 0.7)]
    for norm, reference_norm in step_norms(W, gradients, "adafactor"):
        # Equal in exact arithmetic. The float64 rounding of the outer
        # product, the means and the two norms stays far below 1e-12.
        torch.testing.assert_close(norm, reference_norm, rtol=1e-12, atol=0)


def test_graft_adafactor_row_column_moments():
    conv = torch.nn.Parameter(torch.randn(8, 3, 3, 3))
    optimizer = SpectralKron([conv], graft="adafactor", state_dtype=torch.bfloat16)
    gradients = []
    for seed in range(3):
        gradients.append(set_gradient(conv, seed).reshape(8, 27))
        optimizer.step()
    state = optimizer.state[conv]
    assert "exp_avg_sq" not in state
    row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
    # Viewed as (out, in * kh * kw), and float32 although the state is bfloat16.
    assert row.shape == (8,)
    assert col.shape == (27,)
    assert row.dtype == torch.float32
    assert col.dtype == torch.float32
    beta2 = optimizer.param_groups[0]["betas"][1]
    expected_row = sum((1 - beta2) * beta2 ** (2 - k) * g.square().mean(dim=1) for k, g in enumerate(gradients))
    expected_col = sum((1 - beta2) * beta2 ** (2 - k) * g.square().mean(dim=0) for k, g in enumerate(gradients))
    # Three float32 moving-average updates: a few unit roundoffs (6e-8).
    torch.testing.assert_close(row, expected_row, rtol=1e-6, atol=0)
    torch.testing.assert_close(col, expected_col, rtol=1e-6, atol=0)


def test_one_dimensional_path_is_adamw():
    bias = torch.nn.Parameter(torch.randn(7))
    reference = torch.nn.Parameter(bias.detach().clone())
    optimizer = SpectralKron([bias], lr=1e-2, weight_decay=0.1)
    adamw = torch.optim.AdamW([reference], lr=1e-2, weight_decay=0.1)
    for seed in range(4):
        reference.grad = set_gradient(bias, seed)
        optimizer.step()
        adamw.step()
        torch.testing.assert_close(bias.detach(), reference.detach(), rtol=1e-6, atol=1e-7)
    assert set(optimizer.state[bias]) == {"step", "exp_avg", "exp_avg_sq"}


@pytest.mark.parametrize("count", [1, 2], ids=["alone", "foreach"])
def test_adam_path_eps_matches_adamw(count):
    # Gradients of 1e-8 give sqrt(v_hat) of about 1e-8, the size of eps, so
    # eps about halves each step here. The formula is AdamW's in float32, so
    # the weights differ by a few roundings of steps of about lr, as in
    # test_one_dimensional_path_is_adamw. Two biases take the _foreach step,
    # one the single-tensor step.
    biases = [torch.nn.Parameter(torch.randn(7)) for _ in range(count)]
    references = [torch.nn.Parameter(bias.detach().clone()) for bias in biases]
    optimizer = SpectralKron(biases, lr=1e-2)
    adamw = torch.optim.AdamW(references, lr=1e-2, weight_decay=0.0)
    for step in range(4):
        for index, (bias, reference) in enumerate(zip(biases, references, strict=True)):
            bias.grad = 1e-8 * torch.randn(7, generator=torch.Generator().manual_seed(10 * step + index))
            reference.grad = bias.grad.clone()
        optimizer.step()
        adamw.step()
        for bias, reference in zip(biases, references, strict=True):
            torch.testing.assert_close(bias.detach(), reference.detach(), rtol=1e-6, atol=1e-7)


def test_graft_rms_follows_scheduler():
    W = single_weight((6, 4), dtype=torch.float32)
    optimizer = SpectralKron([W], lr=0.1, graft="rms", graft_rms=0.2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    for step in range(3):
        set_gradient(W, step)
        before = W.detach().clone()
        optimizer.step()
        scheduler.step()
        rms = torch.linalg.norm(W.detach() - before) / math.sqrt(W.numel())
        # RMS of the step is lr_t * graft_rms with lr_t = 0.1 * 0.5^t.
        torch.testing.assert_close(rms, torch.tensor(0.1 * 0.5**step * 0.2), rtol=1e-5, atol=0)


def test_max_update_rms_clips():
    W = single_weight((6, 4), dtype=torch.float32)
    optimizer = SpectralKron([W], lr=1.0, graft="rms", graft_rms=0.5, max_update_rms=0.01)
    set_gradient(W, 0)
    before = W.detach().clone()
    optimizer.step()
    rms = torch.linalg.norm(W.detach() - before) / math.sqrt(W.numel())
    torch.testing.assert_close(rms, torch.tensor(0.01), rtol=1e-5, atol=0)


@pytest.mark.parametrize("shape", [(6, 4), (7,)], ids=["kron", "adam"])
def test_max_update_rms_above_step_changes_nothing(shape):
    # The cap scales a step by min(1, limit / norm), so a step below it is
    # multiplied by exactly 1.0 and must match the uncapped step bitwise.
    # By the Cauchy-Schwarz inequality, Adam's bias-corrected step over 4
    # steps with the default betas has entries of at most 1.007, and the
    # grafted Kronecker step takes the norm of its factored version, of the
    # same order. Both stay far below an RMS of 1e3. Two parameters of one
    # shape take the stacked Kronecker and the _foreach Adam steps, and the
    # third, in float64, the single-tensor step.
    runs = {}
    for cap in (None, 1e3):
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(*shape)) for _ in range(2)]
        params.append(torch.nn.Parameter(torch.randn(5, *shape[1:], dtype=torch.float64)))
        optimizer = SpectralKron(params, lr=0.1, max_update_rms=cap)
        for step in range(4):
            for index, param in enumerate(params):
                set_gradient(param, 10 * step + index)
            optimizer.step()
        runs[cap] = [param.detach() for param in params]
    for capped, uncapped in zip(runs[1e3], runs[None], strict=True):
        assert torch.equal(capped, uncapped)


def test_weight_decay_is_decoupled():
    results = {}
    for weight_decay in (0.0, 0.3):
        W = single_weight((6, 4), dtype=torch.float64)
        optimizer = SpectralKron([W], lr=0.1, weight_decay=weight_decay)
        set_gradient(W, 0)
        before = W.detach().clone()
        optimizer.step()
        results[weight_decay] = W.detach()
    # The direction does not depend on W, so the runs differ by lr * wd * W.
    torch.testing.assert_close(results[0.3] - results[0.0], -0.1 * 0.3 * before, rtol=1e-12, atol=1e-14)


def test_weight_decay_default_differs_from_adamw():
    # A bare AdamW -> SpectralKron swap drops AdamW's default decay, so the docstring must state the difference.
    adamw_default = inspect.signature(torch.optim.AdamW).parameters["weight_decay"].default
    default = inspect.signature(SpectralKron).parameters["weight_decay"].default
    assert default == 0.0
    assert adamw_default == 0.01
    docstring = " ".join(SpectralKron.__doc__.split())
    assert "Default 0.0, whereas ``torch.optim.AdamW`` defaults to 0.01" in docstring
    assert "pass ``weight_decay=0.01`` when replacing a bare ``AdamW(params)``" in docstring


def test_routing_of_vectors_convs_and_wide_weights():
    conv = torch.nn.Parameter(torch.randn(8, 3, 3, 3))
    bias = torch.nn.Parameter(torch.randn(8))
    embedding = torch.nn.Parameter(torch.randn(5000, 16))
    matrix = torch.nn.Parameter(torch.randn(6, 5))
    optimizer = SpectralKron(
        [{"params": [conv, bias, embedding], "max_precond_dim": 1024}, {"params": [matrix], "route": "adam"}]
    )
    for param in (conv, bias, embedding, matrix):
        param.grad = torch.randn_like(param)
    optimizer.step()
    state = optimizer.state
    assert state[conv]["B_C"].shape == (8, 8)
    assert state[conv]["B_K"].shape == (27, 27)  # (out, in * kh * kw)
    assert set(state[bias]) == {"step", "exp_avg", "exp_avg_sq"}
    assert "B_C" not in state[embedding]  # 5000 > max_precond_dim: diagonal
    assert state[embedding]["d_C"].shape == (5000,)
    assert state[embedding]["B_K"].shape == (16, 16)
    assert set(state[matrix]) == {"step", "exp_avg", "exp_avg_sq"}


def test_route_kron_rejects_vectors():
    bias = torch.nn.Parameter(torch.randn(8))
    with pytest.raises(ValueError, match=r"route='kron' .* parameter 0 in param group 0 has shape \(8,\)"):
        SpectralKron([bias], route="kron")


def test_route_kron_scalar_message_names_0d():
    # The advice in the message must cover a scalar, not only 1-D parameters.
    scale = torch.nn.Parameter(torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"has shape \(\); put 0-D and 1-D parameters in a group with route='auto'"):
        SpectralKron([scale], route="kron")
    optimizer = SpectralKron([scale])
    optimizer.param_groups[0]["route"] = "kron"
    scale.grad = torch.ones_like(scale)
    with pytest.raises(ValueError, match=r"got shape \(\); put 0-D and 1-D parameters"):
        optimizer.step()


def test_route_kron_added_group_rejected():
    optimizer = SpectralKron([torch.nn.Parameter(torch.randn(4, 3))])
    bias = torch.nn.Parameter(torch.randn(8))

    with pytest.raises(ValueError, match="parameter 0 in param group 1 has shape"):
        optimizer.add_param_group({"params": [bias], "route": "kron"})

    assert len(optimizer.param_groups) == 1


def test_route_kron_set_later_raises_at_step():
    bias = torch.nn.Parameter(torch.randn(8))
    optimizer = SpectralKron([bias])
    optimizer.param_groups[0]["route"] = "kron"
    bias.grad = torch.randn_like(bias)
    with pytest.raises(ValueError, match="route='kron'"):
        optimizer.step()


def test_params_without_grad_are_skipped():
    used, unused = torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(4, 3))
    optimizer = SpectralKron([used, unused])
    used.grad = torch.randn_like(used)
    before = unused.detach().clone()
    optimizer.step()
    assert unused not in optimizer.state
    assert torch.equal(unused.detach(), before)


def test_closure_returns_loss():
    W = single_weight((4, 3), dtype=torch.float32)
    optimizer = SpectralKron([W])
    expected = (W.detach() ** 2).sum()

    def closure():
        optimizer.zero_grad()
        loss = (W**2).sum()
        loss.backward()
        return loss

    # The closure runs before the update, on the current weights.
    assert torch.equal(optimizer.step(closure).detach(), expected)
    assert (W.detach() ** 2).sum() < expected


def snapshot(param, optimizer):
    return param.detach().clone(), {key: value.clone() for key, value in optimizer.state[param].items()}


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_gradient_skips_update(bad):
    model = make_model()
    optimizer = SpectralKron(model.parameters(), precondition_frequency=1)
    train_steps(model, optimizer, 3)
    weights = [model[0].weight, model[0].bias]
    before = [snapshot(param, optimizer) for param in weights]
    for param in weights:
        param.grad = torch.randn_like(param)
        param.grad.view(-1)[0] = bad
    with pytest.warns(PreconditionerWarning, match="NaN or infinite"):
        optimizer.step()
    for param, (value, state) in zip(weights, before, strict=True):
        assert torch.equal(param.detach(), value)
        for key, saved in state.items():
            assert torch.equal(optimizer.state[param][key], saved), key


def test_zero_gradient_keeps_preconditioner():
    W = single_weight((6, 4), dtype=torch.float32)
    optimizer = SpectralKron([W], precondition_frequency=1, betas=(0.9, 0.999))
    for seed in range(3):
        set_gradient(W, seed)
        optimizer.step()
    state = optimizer.state[W]
    factors = {key: state[key].clone() for key in ("d_C", "B_C", "d_K", "B_K", "alpha")}
    momentum = state["exp_avg"].clone()
    W.grad = torch.zeros_like(W)
    with pytest.warns(PreconditionerWarning, match="all zeros"):
        optimizer.step()
    for key, value in factors.items():
        assert torch.equal(state[key], value), key
    # The rest of the step still runs: momentum decays, the step count advances.
    torch.testing.assert_close(state["exp_avg"], 0.9 * momentum)
    assert state["step"].item() == 4


def test_zero_gradient_of_frozen_weight_names_fix():
    model = make_model()
    optimizer = SpectralKron(model.named_parameters(), precondition_frequency=1)
    train_steps(model, optimizer, 2)
    model[0].weight.requires_grad_(False)
    model[0].weight.grad.zero_()
    with pytest.warns(PreconditionerWarning) as caught:
        optimizer.step()
    messages = [str(warning.message) for warning in caught]
    frozen = [message for message in messages if "'0.weight'" in message]
    assert len(frozen) == 1
    assert "is all zeros" in frozen[0]
    assert "requires_grad=False, so backward() leaves its zeroed gradient at zero" in frozen[0]
    assert "zero_grad() with the default set_to_none=True sets the gradient to None" in frozen[0]
    # A trainable weight with a zero gradient gets no such advice.
    model[0].weight.requires_grad_(True)
    with pytest.warns(PreconditionerWarning) as caught:
        optimizer.step()
    assert all("requires_grad" not in str(warning.message) for warning in caught)


def test_zero_gradient_before_first_refresh():
    W = single_weight((6, 4), dtype=torch.float32)
    optimizer = SpectralKron([W])
    W.grad = torch.zeros_like(W)
    before = W.detach().clone()
    with pytest.warns(PreconditionerWarning, match="all zeros"):
        optimizer.step()
    state = optimizer.state[W]
    assert state["alpha"].item() == 0  # still waiting for a usable gradient
    assert state["step"].item() == 0
    assert torch.equal(W.detach(), before)
    set_gradient(W, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optimizer.step()
    assert state["alpha"].item() > 0


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("lr", -1.0),
        ("lr", None),
        ("lr", "1e-3"),
        ("betas", (0.9, 1.0)),
        ("betas", 0.9),
        ("betas", (0.9, "0.99")),
        ("eps", -1e-8),
        ("weight_decay", -0.1),
        ("root", 0.0),
        ("precond_lr", 0.0),
        ("precond_lr", 1.5),
        ("precondition_frequency", 0),
        ("precondition_frequency", 2.5),
        ("max_precond_dim", 0),
        ("graft", "sgd"),
        ("generator_norm", "nuclear"),
        ("graft_rms", 0.0),
        ("max_update_rms", 0.0),
        ("damping", -1.0),
        ("state_dtype", torch.int32),
        ("cayley", "lu"),
        ("max_generator_norm", 1.0),
        ("max_cayley_squarings", -1),
        ("max_cayley_squarings", 1.5),
        ("damping", True),
        ("orthogonalize_every", -1),
        ("route", "diagonal"),
    ],
)
def test_invalid_option_raises(option, value):
    with pytest.raises(ValueError, match=f"invalid {option}"):
        SpectralKron([torch.nn.Parameter(torch.randn(3, 2))], **{option: value})


def test_invalid_option_in_group_raises():
    with pytest.raises(ValueError, match="invalid precond_lr"):
        SpectralKron([{"params": [torch.nn.Parameter(torch.randn(3, 2))], "precond_lr": -1.0}])


def test_parameter_listed_twice_rejected():
    # torch.optim only warns, and AdamW steps the parameter twice. Here both
    # entries would share one state, so the group is rejected and not added.
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    weight = model[0].weight
    optimizer = SpectralKron([model[0].bias])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's own warning about duplicates
        with pytest.raises(ValueError, match=r"parameter 1 in param group 1 appears twice in the group; list each"):
            optimizer.add_param_group({"params": [weight, weight]})
        with pytest.raises(ValueError, match=r"parameter '0.weight' in param group 0 appears twice"):
            SpectralKron([("0.weight", weight), ("0.weight", weight)])
    assert len(optimizer.param_groups) == 1


def test_invalid_option_edited_names_group():
    optimizer = SpectralKron(
        [{"params": [torch.nn.Parameter(torch.randn(3, 2))]}, {"params": [torch.nn.Parameter(torch.randn(2, 2))]}]
    )
    for group in optimizer.param_groups:
        for param in group["params"]:
            param.grad = torch.ones_like(param)
    optimizer.param_groups[1]["lr"] = -1.0
    with pytest.raises(ValueError, match=r"invalid lr -1.0 in param group 1: expected a finite number >= 0"):
        optimizer.step()


@pytest.mark.parametrize(
    ("keyword", "advice"),
    [
        ("shampoo_beta", r"precond_lr = precondition_frequency \* \(1 - shampoo_beta\)"),
        ("momentum", r"betas\[0\]"),
        ("epsilon", "which damping does here in units of the factor.s eigenvalues"),
        ("max_preconditioner_dim", "did you mean 'max_precond_dim'"),
        ("weight_decy", "did you mean 'weight_decay'"),
        ("foreach", "one implementation"),
        ("ns_steps", "no Newton-Schulz iteration"),
    ],
)
def test_peer_keyword_names_fix(keyword, advice):
    with pytest.raises(TypeError, match=f"unexpected keyword argument '{keyword}'; .*{advice}"):
        SpectralKron([torch.nn.Parameter(torch.randn(3, 2))], **{keyword: 0.9})


def test_unknown_keyword_lists_options():
    with pytest.raises(TypeError) as raised:
        SpectralKron([torch.nn.Parameter(torch.randn(3, 2))], colour=1)
    message = str(raised.value)
    assert "did you mean" not in message
    assert "the options it accepts are lr, betas, eps, weight_decay, root," in message


def test_options_dict_in_lr_slot():
    with pytest.raises(TypeError, match=r"positional argument 2 is a dict; .* SpectralKron\(params, \*\*options\)"):
        SpectralKron([torch.nn.Parameter(torch.randn(3, 2))], {"lr": 0.1})


def test_adamw_positional_amsgrad_named():
    # AdamW(params, lr, betas, eps, weight_decay, amsgrad): the sixth has no place here.
    params = [torch.nn.Parameter(torch.randn(3, 2))]
    message = r"takes at most 5 positional arguments \(params, lr, betas, eps, weight_decay\) but 6 were given"
    with pytest.raises(TypeError, match=message):
        SpectralKron(params, 1e-3, (0.9, 0.999), 1e-8, 0.01, False)


def test_subclass_named_in_keyword_error():
    class TunedKron(SpectralKron):
        pass

    with pytest.raises(TypeError, match=r"^TunedKron\(\) got an unexpected keyword argument 'colour'"):
        TunedKron([torch.nn.Parameter(torch.randn(3, 2))], colour=1)


@pytest.mark.parametrize("key", ["no_decay", "scale", "name"])
def test_group_own_keys_do_not_warn(key):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SpectralKron([{"params": [torch.nn.Parameter(torch.randn(3, 2))], key: True}])


@pytest.mark.parametrize(
    ("key", "advice"), [("weight_decy", "did you mean 'weight_decay'"), ("epsilon", "damping does here")]
)
def test_group_key_typo_warns(key, advice):
    W = torch.nn.Parameter(torch.randn(3, 2))
    with pytest.warns(UserWarning, match=f"ignores the key '{key}' in param group 0.*{advice}") as record:
        SpectralKron([{"params": [W], key: 0.1}])
    # The warning points at the caller, not into spectral_es or torch.optim.
    assert record[0].filename == __file__


def test_group_custom_keys_do_not_warn():
    optimizer = SpectralKron([torch.nn.Parameter(torch.randn(3, 2))])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optimizer.add_param_group({"params": [torch.nn.Parameter(torch.randn(2))], "name": "bias", "initial_lr": 0.1})
    assert optimizer.param_groups[1]["name"] == "bias"


def test_exact_cayley_needs_solver_dtype():
    W = torch.nn.Parameter(torch.randn(4, 3, dtype=torch.bfloat16))
    optimizer = SpectralKron([W], cayley="exact")
    W.grad = torch.randn_like(W)
    with pytest.raises(ValueError, match="cayley='exact' needs a dense solver"):
        optimizer.step()


def test_exact_cayley_bf16_state_rejected_early():
    with pytest.raises(ValueError, match="cayley='exact' needs a dense solver"):
        SpectralKron([torch.nn.Parameter(torch.randn(4, 3))], cayley="exact", state_dtype="bfloat16")


def test_tensor_learning_rate_accepted():
    W = torch.nn.Parameter(torch.ones(4, 3))
    optimizer = SpectralKron([W], lr=torch.tensor(0.1))
    W.grad = torch.ones(4, 3)
    optimizer.step()
    assert torch.all(W < 1)


@pytest.mark.parametrize(
    "betas",
    [(torch.tensor(0.9), torch.tensor(0.999)), (np.float32(0.9), np.float32(0.999))],
    ids=["tensor", "numpy-float32"],
)
def test_betas_as_scalars_match_floats(betas):
    # torch.optim.AdamW accepts 0-d tensors as betas, and np.float32 is not a
    # Python float. Both must give the steps of the floats they contain, bitwise,
    # on every path: three weights of which two share a stack, and the biases.
    def train(betas):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Linear(6, 6), torch.nn.Linear(6, 6))
        optimizer = SpectralKron(model.parameters(), lr=1e-2, betas=betas)
        generator = torch.Generator().manual_seed(1)
        for _ in range(3):
            optimizer.zero_grad()
            model(torch.randn(8, 4, generator=generator)).square().mean().backward()
            optimizer.step()
        return list(model.parameters())

    expected = train(tuple(float(beta) for beta in betas))
    for param, reference in zip(train(betas), expected, strict=True):
        assert torch.equal(param, reference)


def test_one_element_tensor_options_accepted():
    # torch.optim.AdamW accepts one-element tensors of any shape as lr and
    # betas. They must give the steps of the floats they contain, bitwise.
    def train(lr, betas):
        W = single_weight((6, 4), dtype=torch.float32)
        bias = torch.nn.Parameter(torch.zeros(6))
        optimizer = SpectralKron([W, bias], lr=lr, betas=betas)
        for seed in range(3):
            set_gradient(W, seed)
            set_gradient(bias, seed + 10)
            optimizer.step()
        return W, bias

    lr, betas = torch.tensor([0.01]), (torch.tensor([0.9]), torch.tensor([[0.999]]))
    floats = train(float(lr), tuple(float(beta) for beta in betas))
    for param, reference in zip(train(lr, betas), floats, strict=True):
        assert torch.equal(param, reference)


def test_one_element_lr_edited_in_place():
    # The group keeps a view of the caller's tensor, so setting it to 0 in
    # place stops the steps, as it does with torch.optim.AdamW.
    lr = torch.tensor([0.01])
    W = single_weight((6, 4), dtype=torch.float32)
    optimizer = SpectralKron([W], lr=lr)
    set_gradient(W, 0)
    optimizer.step()
    lr.fill_(0.0)
    before = W.detach().clone()
    set_gradient(W, 1)
    optimizer.step()
    assert torch.equal(W, before)


def test_two_element_lr_rejected():
    with pytest.raises(ValueError, match=r"invalid lr tensor\(\[0.0010, 0.0020\]\).*one-element tensor"):
        SpectralKron([torch.nn.Parameter(torch.randn(4, 3))], lr=torch.tensor([1e-3, 2e-3]))


def test_negative_tensor_lr_message():
    # The value is a one-element tensor, so the message must not suggest one as the fix.
    expected = (
        r"invalid lr tensor\(-0.0010\) in param group 0: "
        r"expected a finite number >= 0, as a float or a one-element tensor"
    )
    with pytest.raises(ValueError, match=expected):
        SpectralKron([torch.nn.Parameter(torch.randn(4, 3))], lr=torch.tensor([-1e-3]))


def test_sparse_gradient_raises():
    W = torch.nn.Parameter(torch.randn(4, 3))
    optimizer = SpectralKron([W])
    W.grad = torch.randn(4, 3).to_sparse()
    with pytest.raises(ValueError, match="parameter 0 of group 0 has a sparse gradient"):
        optimizer.step()


def test_complex_parameter_message():
    W = torch.nn.Parameter(torch.randn(4, 3, dtype=torch.complex64))
    W.grad = torch.ones_like(W)
    optimizer = SpectralKron([torch.nn.Parameter(torch.randn(2, 2)), W])

    with pytest.raises(ValueError) as raised:
        optimizer.step()

    assert "parameter 1 of group 0 is complex (torch.complex64, shape (4, 3))" in str(raised.value)
    assert "torch.view_as_complex on it in forward" in str(raised.value)


def test_meta_parameter_named():
    with torch.device("meta"):
        W = torch.nn.Parameter(torch.randn(4, 3))
    W.grad = torch.ones_like(W)
    optimizer = SpectralKron([W])

    with pytest.raises(ValueError, match="parameter 0 of group 0 is on the meta device"):
        optimizer.step()


def test_functional_update_outside_no_grad():
    # The functions run under torch.no_grad() themselves, so a parameter that
    # requires grad can be updated without the optimizer around them.
    W = torch.nn.Parameter(torch.randn(4, 3))
    before = W.detach().clone()
    optimizer = SpectralKron([W])
    group = optimizer.param_groups[0]
    state = functional.init_kron_state(W, torch.float32, 64, "adafactor")
    rotation = {"method": "exact", "max_generator_norm": 0.5}

    functional.kron_update(
        W, torch.randn(4, 3), state, group, refresh="CK", initialize=True, rotation=rotation, orthogonalize=False
    )
    functional.adam_update(W, torch.randn(4, 3), functional.init_adam_state(W, torch.float32), group)

    assert not torch.equal(W.detach(), before)
    assert W.requires_grad


@pytest.mark.parametrize("refresh", ["X", "KC", None])
def test_functional_refresh_checked(refresh):
    W = torch.nn.Parameter(torch.randn(4, 3))
    group = SpectralKron([W]).param_groups[0]
    state = functional.init_kron_state(W, torch.float32, 64, "adafactor")

    with pytest.raises(ValueError, match="invalid refresh"):
        functional.kron_update(
            W, torch.randn(4, 3), state, group, refresh=refresh, initialize=True, rotation={}, orthogonalize=False
        )
    assert state["step"] == 0


def test_matrix_shape_of_scalar_raises():
    with pytest.raises(ValueError, match="0-d tensor"):
        functional.matrix_shape(torch.tensor(1.0))


def test_trains_small_model():
    # Loss on a fixed batch sequence drops well below its start: a check that
    # the direction descends, not of speed.
    model = make_model()
    losses = train_steps(model, SpectralKron(model.parameters(), lr=1e-2), 80)
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])


def _bfloat16_defects(refreshes: int) -> tuple[list[float], float]:
    """Return the defects of B_C and B_K after ``refreshes`` refreshes of a 64 x 64 bfloat16 weight, and the floor.

    Asserts first that both bases rotated away from I.
    """
    generator = torch.Generator().manual_seed(0)
    n = 64
    left = torch.randn(n, n, generator=generator) * torch.logspace(0, -1, n)
    right = torch.randn(n, n, generator=generator) * torch.logspace(0, -1, n)
    weight = torch.nn.Parameter(torch.zeros(n, n, dtype=torch.bfloat16))
    optimizer = SpectralKron([weight], precondition_frequency=1)
    for _ in range(refreshes):
        weight.grad = (left @ torch.randn(n, n, generator=generator) @ right).to(torch.bfloat16)
        optimizer.step()
    floor = orthogonality_defect(torch.linalg.qr(torch.randn(n, n, generator=generator))[0].to(torch.bfloat16).float())
    bases = [optimizer.state[weight][f"B_{side}"].float() for side in "CK"]
    # Bases that never rotated would be I, with a defect of 0 below any
    # bound. Here ||B - I||_F is 11.3, as for a random rotation.
    for side, basis in zip("CK", bases, strict=True):
        distance_from_identity = torch.linalg.norm(basis - torch.eye(n)).item()
        assert distance_from_identity > 5, side
    return [orthogonality_defect(basis) for basis in bases], floor


def test_bfloat16_bases_at_rounding_floor():
    # Refresh 200 ends with a Björck step, which leaves B at the floor: the
    # defect of an orthogonal matrix rounded to bfloat16 (1.00-1.05 times
    # it here). Rounding (3I - B^T B) / 2 to bfloat16 left 1.9-2.0 times
    # the floor, and B - B E / 2 with a bfloat16 Gram matrix 1.24-1.26.
    defects, floor = _bfloat16_defects(200)
    for defect in defects:
        assert defect < 1.15 * floor


def test_bfloat16_defect_between_bjorck_steps():
    # Refresh 199 is the 9th map after the Björck step at 190. Each bfloat16
    # map adds rounding: applied as B + B (R - I) it left 4.8-5.0 times the
    # floor here, and B R with every factor I + X rounded to bfloat16
    # 8.5-9.6 times.
    defects, floor = _bfloat16_defects(199)
    for defect in defects:
        assert defect < 7 * floor


def test_refresh_split_over_two_steps():
    # With T = 4 the row factor refreshes at steps 1, 5, ... and the column
    # factor at 3, 7, ... After the first, each refresh moves d on its own
    # step and leaves the rotation of B, with its generator, to the next
    # step. With a Björck step in every period, the refresh's step takes it
    # first, before the curvature is formed.
    generator = torch.Generator().manual_seed(0)
    weight = torch.nn.Parameter(torch.zeros(32, 32, dtype=torch.bfloat16))
    optimizer = SpectralKron([weight], lr=1e-3, precondition_frequency=4, orthogonalize_every=1)
    keys = ("d_C", "d_K", "B_C", "B_K")

    def step(stretched: str = "") -> list[str]:
        """Take one step, first scaling B_<stretched> by 1.01; return the factor entries that the step changed."""
        weight.grad = torch.randn(32, 32, generator=generator).to(torch.bfloat16)
        state = optimizer.state[weight]
        if stretched:
            # B^T B = 1.0201 I: a defect of about 0.11, five times the
            # bfloat16 floor, that only a Björck step removes.
            state[f"B_{stretched}"].mul_(1.01)
        before = {key: state[key].clone() for key in keys if key in state}
        optimizer.step()
        return [key for key in before if not torch.equal(state[key], before[key])]

    step()  # step 1 creates the state and starts both factors at once
    state = optimizer.state[weight]
    assert functional.pending_sides(state) == ""
    assert not torch.equal(state["B_C"], torch.eye(32, dtype=torch.bfloat16))
    assert step() == []  # step 2: phase 1 of 4
    for side in "KC":  # steps 3 and 4, then 5 and 6
        defect = orthogonality_defect(state[f"B_{side}"].float() * 1.01)
        assert step(side) == [f"d_{side}", f"B_{side}"]  # the Björck step, the curvature and d
        assert orthogonality_defect(state[f"B_{side}"].float()) < 0.5 * defect
        assert functional.pending_sides(state) == side
        pending = state[f"N_{side}"]
        assert pending.dtype == torch.bfloat16
        assert torch.equal(pending, -pending.T)  # skew, so its Cayley map is a rotation
        assert pending.abs().max() > 0
        before = state[f"B_{side}"].clone()
        assert step() == [f"B_{side}"]  # the rotation alone
        assert functional.pending_sides(state) == ""
        # The bfloat16 map rounds each of its 5 products to 2^-9 relative.
        # Entries of B are at most 1, and the rotation moves them by about
        # the generator's size. So 2e-2 leaves room for that rounding, and a
        # rotation by another generator (or none) misses by more.
        expected = before.float() @ cayley_truncated(pending.float(), order=8)
        assert (state[f"B_{side}"].float() - expected).abs().max() < 2e-2
        assert (before.float() - expected).abs().max() > 2e-2


SPECTRAL_CAP = {"max_generator_norm": 0.5, "cap_norm": "spectral"}
# The truncated map in float32 with up to 4 squarings: generators up to 2^4 times the cap rotate in full.
SQUARINGS = {"method": "truncated", "max_generator_norm": 0.25, "cap_norm": "frobenius", "max_squarings": 4}


@pytest.mark.parametrize(
    ("dtype", "rotation", "count"),
    [
        (torch.float32, {"method": "exact", **SPECTRAL_CAP}, 1),
        (torch.bfloat16, {"method": "truncated", **SPECTRAL_CAP}, 1),
        (torch.float32, {"method": "exact", **SPECTRAL_CAP}, 3),
        (torch.float32, SQUARINGS, 1),
        (torch.float32, SQUARINGS, 3),
    ],
    ids=["float32", "bfloat16", "float32 stack", "squarings", "squarings stack"],
)
def test_deferred_rotation_matches_immediate(dtype, rotation, count):
    # A refresh with defer_rotation, followed by kron_rotate_pending, moves
    # d, alpha and B exactly as the refresh without the option: the same
    # operations in the same order, split between two calls. float32 takes
    # the exact map, bfloat16 the truncated one, and the stacks of 3 the
    # batched products. With squarings the rotation counts them again from
    # the stored generator, one count per matrix of a stack.
    generator = torch.Generator().manual_seed(0)
    weights = [torch.zeros(10, 7) for _ in range(count)]
    grads = [torch.randn(10, 7, generator=generator) for _ in weights]
    states = [functional.init_kron_state(weight, dtype, 2048, "adafactor") for weight in weights]
    for state, grad in zip(states, grads, strict=True):
        functional.kron_initialize_scale(state, grad)
        for key in ("B_C", "B_K"):
            state[key].copy_(torch.linalg.qr(torch.randn(state[key].shape, generator=generator))[0].to(dtype))

    options = {"sides": "CK", "beta": 0.3, "rotation": rotation, "damping": 1e-4, "orthogonalize": False}
    at_once = copy.deepcopy(states)
    deferred = copy.deepcopy(states)
    if count == 1:
        functional.kron_refresh(at_once[0], grads[0].to(dtype), **options)
        functional.kron_refresh(deferred[0], grads[0].to(dtype), **options, defer_rotation=True)
    else:
        functional.kron_refresh_stack(at_once, grads, initialize=False, **options)
        functional.kron_refresh_stack(deferred, grads, initialize=False, **options, defer_rotation=True)
    assert all(functional.pending_sides(state) == "CK" for state in deferred)

    if "max_squarings" in rotation:
        # Every generator is longer than the cap, so its map takes at least one squaring.
        norms = [float(generator_norm(state[f"N_{side}"])) for state in deferred for side in "CK"]
        assert min(norms) > rotation["max_generator_norm"]

    if count == 1:
        functional.kron_rotate_pending(deferred[0], rotation=rotation)
    else:
        functional.kron_rotate_pending_stack(deferred, rotation=rotation)

    for original, expected, state in zip(states, at_once, deferred, strict=True):
        assert sorted(state) == sorted(expected)  # no generator is left behind
        for key in ("alpha", "d_C", "d_K", "B_C", "B_K"):
            assert torch.equal(state[key], expected[key]), key
        assert not torch.equal(state["B_C"], original["B_C"])


def test_refresh_rejects_pending_generator():
    # A refresh before kron_rotate_pending would form its curvature in the
    # eigenbases that have not rotated yet, and a deferred one would
    # overwrite the generator, so the rotation would be lost.
    generator = torch.Generator().manual_seed(0)
    grad = torch.randn(10, 7, generator=generator)
    state = functional.init_kron_state(torch.zeros(10, 7), torch.float32, 2048, "adafactor")
    functional.kron_initialize_scale(state, grad)
    rotation = {"method": "exact"}
    options = {"sides": "C", "beta": 0.3, "rotation": rotation, "damping": 1e-4, "orthogonalize": False}
    functional.kron_refresh(state, grad, **options, defer_rotation=True)
    pending = {key: value.clone() for key, value in state.items()}

    for defer_rotation in (False, True):
        with pytest.raises(ValueError, match="pending generator N_C of an earlier refresh"):
            functional.kron_refresh(state, grad, **options, defer_rotation=defer_rotation)
        with pytest.raises(ValueError, match="call kron_rotate_pending .* first"):
            functional.kron_refresh_stack([state], [grad], initialize=False, **options, defer_rotation=defer_rotation)
    assert sorted(state) == sorted(pending)
    for key, value in pending.items():
        assert torch.equal(state[key], value), key

    functional.kron_rotate_pending(state, rotation=rotation)
    functional.kron_refresh(state, grad, **options, defer_rotation=True)
    assert functional.pending_sides(state) == "C"


@pytest.mark.slow
def test_bfloat16_bases_stay_orthogonal_for_2000_refreshes():
    # Without the Björck steps the defect passes 20 by 1,000 refreshes here;
    # with one every 10 refreshes, each step returns it to the rounding floor.
    defects, floor = _bfloat16_defects(2000)
    for defect in defects:
        assert defect < 1.15 * floor


@pytest.mark.parametrize(
    ("state_dtype", "options", "expected"),
    [
        # Squarings double the rounding error of a bfloat16 rotation, so only
        # a float32 or float64 state gets them by default. A bfloat16 state
        # caps the spectral norm instead. The order stays 8 for both norms.
        (torch.float32, {}, {"order": 8, "max_generator_norm": 0.25, "cap_norm": "frobenius", "max_squarings": 4}),
        (torch.bfloat16, {}, {"order": 8, "max_generator_norm": 0.5, "cap_norm": "spectral", "max_squarings": 0}),
        (
            torch.bfloat16,
            {"generator_norm": "frobenius", "max_generator_norm": 0.1, "max_cayley_squarings": 2},
            {"order": 8, "max_generator_norm": 0.1, "cap_norm": "frobenius", "max_squarings": 2},
        ),
        (
            torch.float32,
            {"generator_norm": "spectral"},
            {"order": 8, "max_generator_norm": 0.5, "cap_norm": "spectral"},
        ),
    ],
)
def test_truncated_map_defaults_by_state_dtype(monkeypatch, state_dtype, options, expected):
    seen = []
    original = functional._kron_factor_step

    def spy(*args):
        options = args[-1]  # the checked options, a _FactorOptions
        seen.append({key: getattr(options, key) for key in expected})
        return original(*args)

    monkeypatch.setattr(functional, "_kron_factor_step", spy)
    W = torch.nn.Parameter(torch.randn(6, 4))
    optimizer = SpectralKron([W], state_dtype=state_dtype, cayley="truncated", **options)
    W.grad = torch.randn(6, 4)
    optimizer.step()
    assert seen == [expected, expected]


@pytest.mark.parametrize(("created", "changed"), [("adafactor", "adam"), ("rms", "adafactor"), ("adam", "adafactor")])
def test_graft_change_without_moments_raises(created, changed):
    W = single_weight((6, 4), dtype=torch.float32)
    optimizer = SpectralKron([W], graft=created)
    set_gradient(W, 0)
    optimizer.step()
    optimizer.param_groups[0]["graft"] = changed
    set_gradient(W, 1)
    before = W.detach().clone()
    with pytest.raises(ValueError, match=f"invalid graft '{changed}' for parameter 0 of group 0"):
        optimizer.step()
    assert torch.equal(W.detach(), before)


def test_graft_change_to_rms_works():
    W = single_weight((6, 4), dtype=torch.float32)
    optimizer = SpectralKron([W], lr=0.1, graft="adafactor", graft_rms=0.2)
    set_gradient(W, 0)
    optimizer.step()
    optimizer.param_groups[0]["graft"] = "rms"
    set_gradient(W, 1)
    before = W.detach().clone()
    optimizer.step()
    rms = torch.linalg.norm(W.detach() - before) / math.sqrt(W.numel())
    # The step's RMS is lr * graft_rms, up to float32 rounding of the update.
    torch.testing.assert_close(rms, torch.tensor(0.1 * 0.2), rtol=1e-5, atol=0)


@pytest.mark.parametrize(
    ("option", "value"), [("graft", "Adam"), ("max_generator_norm", 5.0), ("max_cayley_squarings", -3)]
)
def test_edited_options_are_checked(option, value):
    W = single_weight((6, 4), dtype=torch.float32)
    optimizer = SpectralKron([W])
    optimizer.param_groups[0][option] = value
    set_gradient(W, 0)
    with pytest.raises(ValueError, match=f"invalid {option} {value!r}"):
        optimizer.step()


@pytest.mark.parametrize(
    ("gradient", "error", "message"),
    [
        (torch.randn(4, 6), ValueError, r"kron_refresh: B_C has shape \(6, 6\), but G of shape \(4, 6\)"),
        (torch.randn(6, 6, dtype=torch.float64), TypeError, "kron_refresh: B_C has dtype torch.float32 but G"),
        (torch.randn(36), ValueError, r"kron_refresh: G has shape \(36,\); expected a matrix"),
    ],
)
def test_kron_refresh_checks_single_weight(gradient, error, message):
    # A caller of the functional API gets the core's errors, not a bare matmul error.
    state = functional.init_kron_state(torch.zeros(6, 6), torch.float32, 2048, "adafactor")
    functional.kron_initialize_scale(state, torch.randn(6, 6))
    with pytest.raises(error, match=message):
        functional.kron_refresh(
            state, gradient, sides="CK", beta=0.1, rotation={"method": "exact"}, damping=0.0, orthogonalize=False
        )


def scheduled_refreshes(monkeypatch, steps, **options):
    """Step one bfloat16 weight ``steps`` times; return {step: (refreshed sides, Björck sides, rotated sides)}.

    The rotated sides are those whose rotation a refresh left to that step.
    """
    weight = torch.nn.Parameter(torch.zeros(8, 6, dtype=torch.bfloat16))
    optimizer = SpectralKron([weight], lr=1e-3, state_dtype=torch.bfloat16, **options)
    schedule = {}
    run_refreshes = optimizer_module._run_refreshes

    def record(stack):
        step = int(stack[0].state["step"]) + 1
        schedule[step] = (stack[0].sides, stack[0].orthogonalize, stack[0].pending)
        run_refreshes(stack)

    monkeypatch.setattr(optimizer_module, "_run_refreshes", record)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        weight.grad = torch.randn(8, 6, generator=generator).to(torch.bfloat16)
        optimizer.step()
    return schedule


@pytest.mark.parametrize("every", [1, 3, 10])
@pytest.mark.parametrize("T", [4, 5, 10])
def test_long_period_rotation_schedule(monkeypatch, T, every):
    # Each refresh after the first leaves its rotation to the next step,
    # which refreshes nothing. Each side takes one Björck step in each
    # orthogonalize_every-th period, with its refresh.
    periods = 2 * every
    schedule = scheduled_refreshes(monkeypatch, T * periods, precondition_frequency=T, orthogonalize_every=every)

    expected = {}
    for period in range(periods):
        start = period * T + 1
        bjorck = (period + 1) % every == 0
        row = "CK" if period == 0 else "C"  # the first step starts both sides at once
        expected[start] = (row, "C" if bjorck else "", "")
        expected[start + T // 2] = ("K", "K" if bjorck else "", "")
        if period > 0:
            expected[start + 1] = ("", "", "C")
        expected[start + T // 2 + 1] = ("", "", "K")
    assert schedule == expected


@pytest.mark.parametrize("T", [1, 2, 3])
def test_short_period_rotation_schedule(monkeypatch, T):
    # For T < 4 the step after the row factor's refresh refreshes the
    # column factor (T = 2, 3) or both (T = 1), so each refresh rotates on
    # its own step, and each Björck step is taken within its refresh.
    schedule = scheduled_refreshes(monkeypatch, 6 * T, precondition_frequency=T, orthogonalize_every=3)

    for step, (sides, bjorck, pending) in schedule.items():
        period = (step - 1) // T + 1
        expected = sides if period % 3 == 0 else ""
        assert bjorck == expected, f"step {step}"
        assert pending == "", f"step {step}"
    assert sorted(schedule) == [step for step in range(1, 6 * T + 1) if (step - 1) % T in {0, T // 2}]


@pytest.mark.parametrize("zero_step", [5, 6])
def test_bjorck_and_rotation_without_gradient(zero_step):
    # With T = 4 and a Björck step in every period the row factor refreshes
    # at step 5, after its Björck step, and rotates at step 6. A zero
    # gradient at step 5 skips the refresh with a warning: the Björck step
    # still comes, and step 6 has no rotation to take. A zero gradient at
    # step 6 leaves the rotation to run.
    generator = torch.Generator().manual_seed(0)
    weight = torch.nn.Parameter(torch.zeros(16, 16, dtype=torch.bfloat16))
    optimizer = SpectralKron([weight], lr=1e-3, precondition_frequency=4, orthogonalize_every=1)
    state = optimizer.state
    changes = []
    for step in range(1, 9):
        weight.grad = torch.randn(16, 16, generator=generator).to(torch.bfloat16)
        if step == zero_step:
            weight.grad.zero_()
        if step == 1:
            optimizer.step()
            continue
        state[weight]["B_C"].mul_(1.01)
        before = state[weight]["B_C"].clone()
        if step == 5 == zero_step:
            with pytest.warns(PreconditionerWarning, match="skipped the preconditioner refresh"):
                optimizer.step()
        else:
            optimizer.step()
        if not torch.equal(state[weight]["B_C"], before):
            changes.append(step)
    assert changes == ([5] if zero_step == 5 else [5, 6])
