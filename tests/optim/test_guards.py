"""SpectralKron on unusual input: rejected groups and state dicts, huge and zero gradients, routing limits."""

from __future__ import annotations

import warnings
import weakref

import pytest

from spectral_es.optim import PreconditionerWarning, SpectralKron
from spectral_es.optim import optimizer as optimizer_module
from tests.optim.conftest import batch, make_model, torch, train_steps


def trained(steps=3):
    model = make_model()
    optimizer = SpectralKron(model.parameters(), lr=1e-2, precondition_frequency=1)
    train_steps(model, optimizer, steps)
    return model, optimizer


def state_copy(optimizer):
    return {id(param): {key: value.clone() for key, value in state.items()} for param, state in optimizer.state.items()}


def assert_same_state(optimizer, saved):
    assert {id(param) for param in optimizer.state} == set(saved)
    for param, state in optimizer.state.items():
        assert state.keys() == saved[id(param)].keys()
        for key, value in state.items():
            assert torch.equal(value, saved[id(param)][key]), key


def test_bad_param_group_changes_nothing():
    model, optimizer = trained()
    extra = torch.nn.Parameter(torch.randn(3, 3))
    with pytest.raises(ValueError, match="invalid root -1"):
        optimizer.add_param_group({"params": [extra], "root": -1})
    assert len(optimizer.param_groups) == 1
    train_steps(model, optimizer, 1, first_step=3)  # the optimizer still steps
    optimizer.add_param_group({"params": [extra], "root": 4})  # and takes the corrected group
    assert optimizer.param_groups[-1]["root"] == 4


def test_foreign_state_dict_changes_nothing():
    model, optimizer = trained()
    saved, lr = state_copy(optimizer), optimizer.param_groups[0]["lr"]
    adamw = torch.optim.AdamW(model.parameters(), lr=0.5)
    train_steps(model, adamw, 1)
    with pytest.raises(ValueError, match="not saved by SpectralKron: its group 0 has no option"):
        optimizer.load_state_dict(adamw.state_dict())
    assert_same_state(optimizer, saved)
    assert optimizer.param_groups[0]["lr"] == lr


def test_invalid_saved_option_changes_nothing():
    _, optimizer = trained()
    saved, lr = state_copy(optimizer), optimizer.param_groups[0]["lr"]
    state_dict = optimizer.state_dict()
    state_dict["param_groups"][0].update(lr=0.9, state_dtype="bf16")
    with pytest.raises(ValueError, match="invalid option in group 0: invalid state_dtype 'bf16'"):
        optimizer.load_state_dict(state_dict)
    assert_same_state(optimizer, saved)
    assert optimizer.param_groups[0]["lr"] == lr
    assert optimizer.param_groups[0]["state_dtype"] is None


def test_invalid_saved_later_option_changes_nothing():
    # An option added after the first release is filled in only when a
    # saved group lacks it. A saved invalid value is still rejected.
    _, optimizer = trained()
    saved = state_copy(optimizer)
    state_dict = optimizer.state_dict()
    state_dict["param_groups"][0]["maximize"] = "yes"
    with pytest.raises(ValueError, match="invalid option in group 0: invalid maximize 'yes'"):
        optimizer.load_state_dict(state_dict)
    assert_same_state(optimizer, saved)
    assert optimizer.param_groups[0]["maximize"] is False


def test_other_shapes_change_nothing():
    _, optimizer = trained()
    saved = state_copy(optimizer)
    other = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 5)
    )
    other_optimizer = SpectralKron(other.parameters())
    for param in other.parameters():
        param.grad = torch.randn_like(param)
    other_optimizer.step()
    with pytest.raises(ValueError, match=r"has shape \(5, 64\), but its parameter has shape \(6, 64\)"):
        optimizer.load_state_dict(other_optimizer.state_dict())
    assert_same_state(optimizer, saved)


def test_old_state_dict_gets_new_defaults():
    model, optimizer = trained()
    state_dict = optimizer.state_dict()
    for name in ("max_cayley_squarings", "generator_norm", "max_side_ratio", "maximize"):
        del state_dict["param_groups"][0][name]
    fresh = SpectralKron(model.parameters(), max_side_ratio=2.0, generator_norm="spectral", maximize=True)
    fresh.load_state_dict(state_dict)
    group = fresh.param_groups[0]
    # max_side_ratio is None, no limit, as when the saved states were created.
    assert (group["max_cayley_squarings"], group["generator_norm"], group["max_side_ratio"]) == (None, "auto", None)
    assert group["maximize"] is False


def test_old_state_dict_keeps_layout():
    # Before max_side_ratio existed, a 2 x 64 weight got full factors on both sides.
    # The default 16 gives it a diagonal column factor, so the first step raised.
    model = torch.nn.Linear(64, 2)
    optimizer = SpectralKron(model.parameters(), precondition_frequency=1, max_side_ratio=None)
    for seed in range(2):
        optimizer.zero_grad()
        inputs = torch.randn(8, 64, generator=torch.Generator().manual_seed(seed))
        model(inputs).square().mean().backward()
        optimizer.step()
    state_dict = optimizer.state_dict()
    del state_dict["param_groups"][0]["max_side_ratio"]

    resumed = SpectralKron(model.parameters(), precondition_frequency=1)
    resumed.load_state_dict(state_dict)
    resumed.step()
    state = resumed.state[model.weight]
    assert "B_C" in state
    assert "B_K" in state
    assert state["step"].item() == 3


@pytest.mark.parametrize("scale", [1e19, 1e30, 1e38])
def test_huge_gradient_skips_update(scale):
    # Entries of 1e19 sum to an L1 norm above sqrt(float32 max) = 1.8e19:
    # their squares, in the curvature and the second moments, would overflow.
    # Entries of 1e38 are finite, though their float32 L1 norm is infinite.
    model, optimizer = trained()
    weights = list(model.parameters())
    before = [param.detach().clone() for param in weights]
    saved = state_copy(optimizer)
    for param in weights:
        param.grad = torch.full_like(param, scale)
    message = r"has an L1 norm of \S+, at or above 1.8e\+19, so its squares can overflow float32"
    with pytest.warns(PreconditionerWarning, match=message):
        optimizer.step()
    for param, value in zip(weights, before, strict=True):
        assert torch.equal(param.detach(), value)
    assert_same_state(optimizer, saved)


def test_large_gradient_below_limit_is_used():
    # A (6, 64) weight with entries 1e16 has an L1 norm of 3.8e18, below the
    # limit, so its squares (1e32) and their sums (4e34) fit in float32.
    model, optimizer = trained()
    weight = model[3].weight
    for param in model.parameters():
        param.grad = torch.randn_like(param)
    weight.grad = torch.full_like(weight, 1e16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optimizer.step()
    assert torch.isfinite(weight).all()
    assert all(torch.isfinite(value).all() for value in optimizer.state[weight].values())


@pytest.mark.parametrize("count", [1, 2], ids=["alone", "stacked"])
def test_tiny_gradient_initializes_positive_scale(count):
    # Entries of 1e-25 have squares of 1e-50, below float32's smallest
    # subnormal (1.4e-45), so mean(G^2) rounds to 0. Their L1 norm is
    # positive, so the guard accepts them as the first gradient. alpha must
    # still be positive, because the refresh divides G by sqrt(alpha).
    # Two weights of one shape take the stacked refresh.
    weights = [torch.nn.Parameter(torch.randn(5, 3)) for _ in range(count)]
    optimizer = SpectralKron(weights, lr=1e-2)
    for step in range(2):
        for param in weights:
            param.grad = torch.full_like(param, 1e-25)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            optimizer.step()
        for param in weights:
            state = optimizer.state[param]
            assert state["alpha"].item() > 0, step
            for key, value in state.items():
                assert torch.isfinite(value).all(), (step, key)
            assert torch.isfinite(param).all(), step


def test_float64_state_takes_float64_limit():
    # 1e20 is beyond float32's limit of 1.8e19 but far below float64's 1.3e154.
    W = torch.nn.Parameter(torch.randn(4, 3, dtype=torch.float64))
    optimizer = SpectralKron([W], lr=1e-2)
    W.grad = torch.full_like(W, 1e20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optimizer.step()
    assert optimizer.state[W]["alpha"].item() > 0
    assert torch.isfinite(W).all()


def test_float64_norm_beyond_float32_range():
    # The guard stacks the L1 norms of float32 and float64 gradients into one
    # tensor. An L1 norm of 1.2e41 exceeds float32's largest number, 3.4e38,
    # so it must stay float64 there, or a finite gradient would read as
    # infinite and its step would be skipped.
    W = torch.nn.Parameter(torch.randn(4, 3, dtype=torch.float64))
    V = torch.nn.Parameter(torch.randn(4, 3))
    optimizer = SpectralKron([W, V], lr=1e-2)
    W.grad = torch.full_like(W, 1e40)
    V.grad = torch.ones_like(V)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optimizer.step()
    assert optimizer.state[W]["step"] == 1
    assert optimizer.state[V]["step"] == 1
    assert torch.isfinite(W).all()


def test_early_zero_gradient_decays_weight():
    W = torch.nn.Parameter(torch.ones(4, 4))
    optimizer = SpectralKron([W], lr=0.1, weight_decay=0.5)
    for step in range(1, 4):
        W.grad = torch.zeros_like(W)
        with pytest.warns(PreconditionerWarning, match="applied only the weight decay"):
            optimizer.step()
        # As AdamW: the weight shrinks by (1 - lr * weight_decay) per step.
        torch.testing.assert_close(W.detach(), torch.full((4, 4), 0.95**step))
    assert optimizer.state[W]["alpha"].item() == 0
    assert optimizer.state[W]["step"].item() == 0


def test_empty_parameter_skipped_silently():
    empty = torch.nn.Parameter(torch.zeros(0, 3))
    W = torch.nn.Parameter(torch.randn(3, 3))
    optimizer = SpectralKron([empty, W])
    for _ in range(3):
        empty.grad, W.grad = torch.zeros_like(empty), torch.randn_like(W)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            optimizer.step()
    assert empty not in optimizer.state
    assert optimizer.state[W]["alpha"].item() > 0


@pytest.mark.parametrize(
    ("shape", "ratio", "full_sides"),
    [
        ((4, 64), 16.0, {"B_C", "B_K"}),  # 64 = 16 x 4: full
        ((4, 65), 16.0, {"B_C"}),  # 65 > 16 x 4: diagonal
        ((65, 4), 16.0, {"B_K"}),
        ((4, 65), None, {"B_C", "B_K"}),
        ((10, 30), 2.0, {"B_C"}),
    ],
)
def test_routing_by_side_ratio(shape, ratio, full_sides):
    W = torch.nn.Parameter(torch.randn(shape))
    optimizer = SpectralKron([W], max_side_ratio=ratio)
    W.grad = torch.randn_like(W)
    optimizer.step()
    state = optimizer.state[W]
    assert {key for key in ("B_C", "B_K") if key in state} == full_sides
    assert state["d_C"].shape == (shape[0],)
    assert state["d_K"].shape == (shape[1],)


@pytest.mark.parametrize(
    ("alias", "dtype"), [("half", torch.float16), ("float", torch.float32), ("double", torch.float64)]
)
def test_state_dtype_accepts_torch_aliases(alias, dtype):
    W = torch.nn.Parameter(torch.randn(3, 3))
    optimizer = SpectralKron([W], state_dtype=alias, cayley="truncated")
    W.grad = torch.randn_like(W)
    optimizer.step()
    assert optimizer.state[W]["exp_avg"].dtype == dtype
    assert optimizer.state[W]["B_C"].dtype == dtype


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("root", float("inf")),
        ("max_side_ratio", 0.5),
        ("max_side_ratio", "16"),
        ("maximize", 1),
        # Infinite values, which would make the weights inf or NaN, zero every
        # step, or raise only inside step().
        ("lr", float("inf")),
        ("lr", torch.tensor(float("inf"))),
        ("weight_decay", float("inf")),
        ("graft_rms", float("inf")),
        ("eps", float("inf")),
        ("damping", float("inf")),
    ],
)
def test_more_invalid_options(option, value):
    with pytest.raises(ValueError, match=f"invalid {option}"):
        SpectralKron([torch.nn.Parameter(torch.randn(3, 2))], **{option: value})


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("lr", 0.0),
        ("betas", (0.0, 0.0)),
        ("eps", 0.0),
        ("weight_decay", 0.0),
        ("precond_lr", 1.0),
        ("precondition_frequency", 1),
        ("max_precond_dim", 1),
        ("max_side_ratio", 1.0),
        ("damping", 0.0),
        ("max_cayley_squarings", 0),
        ("orthogonalize_every", 0),
    ],
)
def test_closed_range_ends_accepted(option, value):
    # Each value is the closed end of the option's documented range, so the
    # constructor accepts it and a step runs with it.
    W = torch.nn.Parameter(torch.randn(3, 2))
    optimizer = SpectralKron([W], **{option: value})
    assert optimizer.param_groups[0][option] == value
    W.grad = torch.randn_like(W)
    optimizer.step()
    assert torch.isfinite(W).all()


@pytest.mark.parametrize("scale", [1e-4, 1e2, 1e4])
def test_float16_state_stays_finite_at_any_gradient_scale(scale):
    # float16's largest number is 65504: the curvature products of a raw
    # gradient of entries ~100 and the eigenvalue roots of alpha ~1e8
    # overflow it unless both are taken relative to alpha.
    W = torch.nn.Parameter(torch.randn(64, 64, generator=torch.Generator().manual_seed(0)))
    start = W.detach().clone()
    optimizer = SpectralKron([W], state_dtype="float16", precondition_frequency=1)
    generator = torch.Generator().manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(20):
            W.grad = scale * torch.randn(64, 64, generator=generator)
            optimizer.step()
    assert torch.isfinite(W).all()
    assert not torch.equal(W.detach(), start)
    for key, value in optimizer.state[W].items():
        assert torch.isfinite(value).all(), key


def test_float16_refresh_matches_float32_at_large_scale():
    # The refresh divides the gradient by sqrt(alpha), so entries of 1e4,
    # whose squares overflow float16, move the factors as in float32.
    from spectral_es.optim.functional import init_kron_state, kron_refresh

    G = 1e4 * torch.randn(16, 12, generator=torch.Generator().manual_seed(3))
    rotation = {
        "method": "truncated",
        "order": 8,
        "max_generator_norm": 0.5,
        "cap_norm": "spectral",
        "max_squarings": 0,
    }
    states = {}
    for dtype in (torch.float32, torch.float16):
        state = init_kron_state(torch.empty(16, 12), dtype, 2048, "none")
        state["alpha"].copy_(G.square().mean())
        kron_refresh(state, G.to(dtype), sides="CK", beta=0.1, rotation=rotation, damping=1e-4, orthogonalize=False)
        states[dtype] = state
    # float16 rounds the gradient and the products to about 2^-11 = 4.9e-4
    # relative. The eigenvalues move by exp(0.1 (q / d - 1)), which damps
    # that error tenfold, so 1e-3 is a wide margin (torch 2.13 on CPU: 8e-5).
    # They move by 7-9%, so a refresh that skipped them would fail.
    for key in ("d_C", "d_K", "alpha"):
        torch.testing.assert_close(states[torch.float16][key], states[torch.float32][key], rtol=1e-3, atol=0)
    # The truncated map is a few products of 12 or 16 terms, each rounding
    # entries of the basis by about sqrt(16) * 4.9e-4 = 2e-3 (torch 2.13 on
    # CPU: 8e-4). The refresh turns the bases from I by up to 0.3 per entry,
    # so a float16 refresh that skipped the rotation would fail too.
    for key in ("B_C", "B_K"):
        torch.testing.assert_close(states[torch.float16][key].float(), states[torch.float32][key], rtol=0, atol=5e-3)


def test_float16_graft_rescales_in_float32():
    # A float16 direction of RMS 1e-5 grafted to RMS 1 needs a factor of 1e5,
    # beyond float16's largest number (65504); in float32 it is exact.
    from spectral_es.optim.functional import _graft_and_clip

    D = torch.full((8, 8), 1e-5, dtype=torch.float16)
    group = {"graft": "rms", "graft_rms": 1.0, "max_update_rms": None}
    grafted = _graft_and_clip(D, D, {}, group, 1.0)
    assert grafted.dtype == torch.float32
    torch.testing.assert_close(grafted, torch.ones(8, 8), rtol=1e-3, atol=0)


def test_maximize_steps_along_gradient():
    # Maximising f takes exactly the steps of minimising -f: the optimizer
    # negates the gradient and does the same arithmetic, on both paths.
    torch.manual_seed(0)
    W, bias = torch.randn(6, 4), torch.randn(4)
    up = [torch.nn.Parameter(W.clone()), torch.nn.Parameter(bias.clone())]
    down = [torch.nn.Parameter(W.clone()), torch.nn.Parameter(bias.clone())]
    maximizing = SpectralKron(up, lr=0.01, weight_decay=0.1, maximize=True)
    minimizing = SpectralKron(down, lr=0.01, weight_decay=0.1)

    for _ in range(5):
        gradients = [torch.randn(6, 4), torch.randn(4)]
        for param, grad in zip(up, gradients, strict=True):
            param.grad = grad.clone()
        for param, grad in zip(down, gradients, strict=True):
            param.grad = -grad
        maximizing.step()
        minimizing.step()

    for a, b in zip(up, down, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(up[0].detach(), W)


def test_state_dtype_error_shows_given_name():
    with pytest.raises(ValueError, match="invalid state_dtype 'int8'"):
        SpectralKron([torch.nn.Parameter(torch.randn(3, 2))], state_dtype="int8")


def test_maximize_frees_each_negated_gradient(monkeypatch):
    # The negated gradient of a weight is a temporary of its own update, so
    # a step with maximize=True keeps one extra gradient alive at a time, not one
    # per weight of the model. Small weights of one shape are stepped as a
    # stack, whose stacked copy contains all of its gradients anyway, so three
    # shapes keep the weights apart here.
    weights = [torch.nn.Parameter(torch.randn(6, n)) for n in (4, 5, 7)]
    optimizer = SpectralKron(weights, maximize=True)
    update = optimizer_module.kron_update
    seen, alive_at_call = [], []

    def recording_update(param, grad, *args, **kwargs):
        alive_at_call.append(sum(ref() is not None for ref in seen))
        seen.append(weakref.ref(grad))
        return update(param, grad, *args, **kwargs)

    monkeypatch.setattr(optimizer_module, "kron_update", recording_update)
    for _ in range(2):
        for param in weights:
            param.grad = torch.randn_like(param)
        seen.clear()
        alive_at_call.clear()
        optimizer.step()

        assert alive_at_call == [0, 0, 0]


@pytest.mark.parametrize("problem", ["zero", "nan"])
def test_gradient_warning_points_at_caller(problem):
    # step() runs inside torch.no_grad's decorator and torch.optim's hook
    # wrapper, so a fixed stacklevel would name one of their files.
    param = torch.nn.Parameter(torch.randn(6, 4))
    optimizer = SpectralKron([param])
    param.grad = torch.zeros(6, 4) if problem == "zero" else torch.full((6, 4), float("nan"))
    with pytest.warns(PreconditionerWarning) as record:
        optimizer.step()
    assert record[0].filename == __file__


def test_gradient_warning_through_grad_scaler_points_at_caller():
    param = torch.nn.Parameter(torch.randn(6, 4))
    optimizer = SpectralKron([param])
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale((param * 0).sum()).backward()  # a zero gradient, through the scaler
    with pytest.warns(PreconditionerWarning) as record:
        scaler.step(optimizer)
    assert record[0].filename == __file__


def test_edited_state_dtype_raises_until_cast():
    # The state was created in float32. Without the check the step would keep
    # float32 silently, and only a later load_state_dict would cast it, so a
    # resumed run would differ from an uninterrupted one.
    model, optimizer = trained()
    weights = [param.detach().clone() for param in model.parameters()]
    optimizer.param_groups[0]["state_dtype"] = "bfloat16"
    with pytest.raises(ValueError, match="invalid state_dtype 'bfloat16' for parameter 0 of group 0"):
        train_steps(model, optimizer, 1, first_step=3)
    for param, weight in zip(model.parameters(), weights, strict=True):
        assert torch.equal(param, weight)

    # Loading the optimizer's own state dict casts the state to the new dtype.
    optimizer.load_state_dict(optimizer.state_dict())
    train_steps(model, optimizer, 1, first_step=3)
    for param in model.parameters():
        assert optimizer.state[param]["exp_avg"].dtype == torch.bfloat16


def test_state_dtype_none_follows_creation():
    # With state_dtype=None the state keeps the parameter's dtype at creation,
    # as torch.optim's does, so editing the group to None is accepted.
    model, optimizer = trained()
    optimizer.param_groups[0]["state_dtype"] = None
    train_steps(model, optimizer, 1, first_step=3)
    for param in model.parameters():
        assert optimizer.state[param]["exp_avg"].dtype == torch.float32


def test_edited_routing_raises_until_set_back():
    # Routing is decided when the state is created. Without the check an
    # edited max_precond_dim or route was ignored for the rest of the run.
    model, optimizer = trained()
    weights = [param.detach().clone() for param in model.parameters()]
    group = optimizer.param_groups[0]
    group["max_precond_dim"] = 8  # both weights (4 x 9 and 6 x 64) would get a diagonal column factor
    with pytest.raises(ValueError, match=r"invalid routing for parameter 0 of group 0 of shape \(4, 1, 3, 3\)"):
        train_steps(model, optimizer, 1, first_step=3)
    group["max_precond_dim"] = 2048
    group["route"] = "adam"
    with pytest.raises(ValueError, match="give it the Adam path, but its state was created for the Kronecker path"):
        train_steps(model, optimizer, 1, first_step=3)
    for param, weight in zip(model.parameters(), weights, strict=True):
        assert torch.equal(param, weight)

    # An edit that leaves every layout as it is passes.
    group["route"] = "auto"
    group["max_precond_dim"] = 64
    train_steps(model, optimizer, 1, first_step=3)


def test_edited_kron_route_names_vector():
    # A bias has no matrix view, so route='kron' cannot apply to it. Without
    # this check the message offered it "the Kronecker path with full factors".
    model, optimizer = trained()
    optimizer.param_groups[0]["route"] = "kron"
    message = r"route='kron' needs parameters with at least 2 dimensions, but parameter 1 of group 0 has shape \(4,\)"
    with pytest.raises(ValueError, match=message):
        train_steps(model, optimizer, 1, first_step=3)


def test_deleted_state_takes_the_new_routing():
    model, optimizer = trained()
    linear = model[3].weight  # 6 x 64; the conv kernel (4 x 9) keeps full factors at max_precond_dim 32
    optimizer.param_groups[0]["max_precond_dim"] = 32
    del optimizer.state[linear]
    train_steps(model, optimizer, 2, first_step=3)
    state = optimizer.state[linear]
    assert "B_C" in state
    assert "B_K" not in state
    assert state["step"].item() == 2
    assert optimizer.state[model[0].weight]["step"].item() == 5
    assert all(torch.isfinite(param).all() for param in model.parameters())


def test_messages_use_parameter_names():
    # torch keeps the names of named_parameters() in each group's param_names.
    model = make_model()
    optimizer = SpectralKron(model.named_parameters(), precondition_frequency=1)
    train_steps(model, optimizer, 1)
    x, y = batch(0)
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    model[3].weight.grad.zero_()
    with pytest.warns(
        PreconditionerWarning, match=r"the gradient of parameter '3\.weight' of group 0 \(shape \(6, 64\)\)"
    ):
        optimizer.step()


def test_kron_route_error_uses_name():
    model = make_model()
    with pytest.raises(ValueError, match=r"but parameter '0\.bias' in param group 0 has shape \(4,\)"):
        SpectralKron(model.named_parameters(), route="kron")
