"""SpectralKron checkpoints: exact round trips across dtypes, devices and late parameters."""

from __future__ import annotations

import copy
import io

import pytest

from spectral_es.core import generator_norm, orthogonality_defect
from spectral_es.optim import SpectralKron
from tests.conftest import requires_cuda
from tests.optim.conftest import make_model, torch, train_steps

DTYPE_CASES = [
    (torch.float32, None),
    (torch.float32, torch.bfloat16),
    (torch.bfloat16, None),
    (torch.bfloat16, torch.float32),
]


def serialise(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def deserialise(data: bytes, map_location="cpu"):
    return torch.load(io.BytesIO(data), weights_only=True, map_location=map_location)


def state_tensors(optimizer) -> list[tuple[str, torch.Tensor]]:
    return [
        (f"{index}/{key}", value)
        for index, state in optimizer.state_dict()["state"].items()
        for key, value in sorted(state.items())
    ]


def assert_identical(first, second):
    """Same keys, dtypes, devices and bits."""
    assert [name for name, _ in first] == [name for name, _ in second]
    for (name, a), (_, b) in zip(first, second, strict=True):
        assert a.dtype == b.dtype, name
        assert a.device == b.device, name
        assert torch.equal(a, b), name


@pytest.mark.parametrize("period", [2, 4])
@pytest.mark.parametrize(("param_dtype", "state_dtype"), DTYPE_CASES)
def test_round_trip_is_exact(param_dtype, state_dtype, period):
    # With T = 4, step 5 refreshes the row factors and leaves their
    # rotations to step 6, so the saved state contains the pending generators.
    options = {"lr": 1e-2, "state_dtype": state_dtype, "precondition_frequency": period}
    model = make_model(0, param_dtype)
    optimizer = SpectralKron(model.parameters(), **options)
    train_steps(model, optimizer, 5)
    pending = [key for _, state in optimizer.state.items() for key in state if key.startswith("N_")]
    assert bool(pending) == (period == 4)
    saved_model, saved_optimizer = serialise(model.state_dict()), serialise(optimizer.state_dict())
    saved_state = [(name, value.clone()) for name, value in state_tensors(optimizer)]
    train_steps(model, optimizer, 5, first_step=5)

    resumed = make_model(1, param_dtype)
    resumed.load_state_dict(deserialise(saved_model))
    resumed_optimizer = SpectralKron(resumed.parameters(), **options)
    resumed_optimizer.load_state_dict(deserialise(saved_optimizer))
    # The loaded state keeps every dtype: float32 eigenvalues next to bfloat16
    # parameters, bfloat16 bases next to float32 parameters.
    assert_identical(state_tensors(resumed_optimizer), saved_state)

    train_steps(resumed, resumed_optimizer, 5, first_step=5)
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    assert_identical(state_tensors(resumed_optimizer), state_tensors(optimizer))


@pytest.mark.parametrize("cayley", ["auto", "truncated"])
def test_pending_generator_loads_into_bfloat16_state(cayley):
    # A float32 state's generators are not capped for the exact map
    # ("auto") and may be up to 2^4 times the cap with the truncated map's
    # squarings. Loaded onto bfloat16 parameters between a deferred refresh
    # and its rotation, the generator meets the bfloat16 truncated map, with
    # no squarings and a spectral cap of 0.5, so it must be capped again.
    generator = torch.Generator().manual_seed(0)
    weight = torch.nn.Parameter(torch.zeros(32, 32))
    optimizer = SpectralKron([weight], precondition_frequency=4, cayley=cayley)
    for step in range(5):
        # Rank-2 gradients whose scale jumps by 10x, so the refresh at step 5 turns B far.
        low_rank = torch.randn(32, 2, generator=generator) @ torch.randn(2, 32, generator=generator)
        weight.grad = low_rank * 10 ** (step % 3)
        optimizer.step()
    assert generator_norm(optimizer.state[weight]["N_C"], "spectral") > 1
    saved = serialise(optimizer.state_dict())

    resumed_weight = torch.nn.Parameter(weight.detach().to(torch.bfloat16))
    resumed = SpectralKron([resumed_weight], precondition_frequency=4, cayley=cayley)
    resumed.load_state_dict(deserialise(saved))
    state = resumed.state[resumed_weight]
    assert state["N_C"].dtype == torch.bfloat16
    resumed_weight.grad = torch.randn(32, 32, generator=generator).to(torch.bfloat16)
    resumed.step()

    assert "N_C" not in state
    # The bfloat16 floor of a 32 x 32 orthogonal matrix is about 0.014. The
    # order-8 map of a generator at the cap adds at most 2 * 0.5^8 = 8e-3
    # in spectral norm, sqrt(32) times that (0.044) in Frobenius norm, and
    # its 5 bfloat16 products add rounding near the floor each: 0.2 is above
    # all of them. Rotating by the generator as saved gave 6e4 ("truncated")
    # and 1e9 ("auto").
    assert orthogonality_defect(state["B_C"].float()) < 0.2


def warmup_cosine(optimizer):
    """Linear warm-up over 3 steps, then cosine decay over 7: learning rates that change every step."""
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (step + 1) / 3)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=7)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[3])


def test_resume_with_scheduler_is_exact():
    # The scheduler is created before both state dicts are loaded, the order
    # that torch's schedulers need, and the run resumes in the warm-up.
    model = make_model(0)
    optimizer = SpectralKron(model.parameters(), lr=1e-2)
    scheduler = warmup_cosine(optimizer)
    for step in range(2):
        train_steps(model, optimizer, 1, first_step=step)
        scheduler.step()
    saved = serialise(
        {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    )
    for step in range(2, 8):
        train_steps(model, optimizer, 1, first_step=step)
        scheduler.step()

    checkpoint = deserialise(saved)
    resumed = make_model(1)
    resumed.load_state_dict(checkpoint["model"])
    resumed_optimizer = SpectralKron(resumed.parameters(), lr=1e-2)
    resumed_scheduler = warmup_cosine(resumed_optimizer)
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    resumed_scheduler.load_state_dict(checkpoint["scheduler"])
    for step in range(2, 8):
        train_steps(resumed, resumed_optimizer, 1, first_step=step)
        resumed_scheduler.step()

    assert resumed_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    assert_identical(state_tensors(resumed_optimizer), state_tensors(optimizer))


def test_loaded_state_is_a_copy():
    model = make_model(0)
    optimizer = SpectralKron(model.parameters())
    train_steps(model, optimizer, 2)
    state_dict = deserialise(serialise(optimizer.state_dict()))
    kept = {index: {key: value.clone() for key, value in state.items()} for index, state in state_dict["state"].items()}
    optimizer.load_state_dict(state_dict)
    train_steps(model, optimizer, 2, first_step=2)
    # Steps after loading update the optimizer's own tensors, not the dict.
    for index, state in state_dict["state"].items():
        for key, value in state.items():
            assert torch.equal(value, kept[index][key]), key


def test_second_load_accepted():
    # torch.optim.Optimizer.__setstate__ adds differentiable=False to the
    # defaults of a loaded, unpickled or deep-copied optimizer, and the state
    # dicts it saves have no such option. Loading again must still work, as
    # optimizer.load_state_dict(optimizer.state_dict()) does to cast the state
    # after a change of state_dtype.
    model = make_model(0)
    optimizer = SpectralKron(model.parameters(), state_dtype=torch.bfloat16)
    train_steps(model, optimizer, 3)
    saved = serialise(optimizer.state_dict())
    saved_state = [(name, value.clone()) for name, value in state_tensors(optimizer)]

    optimizer.load_state_dict(deserialise(saved))
    optimizer.load_state_dict(deserialise(saved))
    assert_identical(state_tensors(optimizer), saved_state)

    copied = copy.deepcopy(optimizer)
    copied.load_state_dict(deserialise(saved))
    assert_identical(state_tensors(copied), saved_state)

    for group in optimizer.param_groups:
        group["state_dtype"] = "float32"
    optimizer.load_state_dict(optimizer.state_dict())
    for state in optimizer.state.values():
        assert state["exp_avg"].dtype == torch.float32


def test_load_with_other_groups_names_counts():
    # torch.optim's own message for this mismatch gives no counts.
    model = make_model(0)
    optimizer = SpectralKron(model.parameters())
    train_steps(model, optimizer, 2)
    saved = optimizer.state_dict()
    params = list(model.parameters())
    regrouped = SpectralKron([{"params": params[:2]}, {"params": params[2:]}])
    with pytest.raises(
        ValueError,
        match=rf"groups of state_dict contain \[{len(params)}\] parameters and those of this optimizer \[2, ",
    ):
        regrouped.load_state_dict(saved)
    assert regrouped.state == {}


def test_load_pre_hook_result_is_loaded():
    # As with torch.optim, the dict that a pre-hook returns is the one checked
    # and loaded: here the hook restores an option that the saved dict lacks
    # and clears the momentum.
    model = make_model(0)
    optimizer = SpectralKron(model.parameters(), state_dtype=torch.bfloat16)
    train_steps(model, optimizer, 3)
    saved = deserialise(serialise(optimizer.state_dict()))
    for group in saved["param_groups"]:
        del group["eps"]

    def migrate(optimizer, state_dict):
        state_dict = {**state_dict, "param_groups": [{**group, "eps": 1e-6} for group in state_dict["param_groups"]]}
        for state in state_dict["state"].values():
            state["exp_avg"] = torch.zeros_like(state["exp_avg"])
        return state_dict

    resumed = SpectralKron(make_model(0).parameters())
    resumed.register_load_state_dict_pre_hook(migrate)
    resumed.load_state_dict(saved)
    assert resumed.param_groups[0]["eps"] == 1e-6
    for state in resumed.state.values():
        assert state["exp_avg"].dtype == torch.bfloat16
        assert not state["exp_avg"].any()


def test_load_post_hook_edits_are_kept():
    model = make_model(0)
    optimizer = SpectralKron(model.parameters(), state_dtype=torch.bfloat16)
    train_steps(model, optimizer, 3)
    seen_dtypes = []

    def clear_momentum(optimizer):
        for state in optimizer.state.values():
            seen_dtypes.append(state["exp_avg"].dtype)
            state["exp_avg"] = torch.zeros_like(state["exp_avg"])

    resumed = SpectralKron(make_model(0).parameters())
    resumed.register_load_state_dict_post_hook(clear_momentum)
    resumed.load_state_dict(deserialise(serialise(optimizer.state_dict())))
    # The hook ran on the state in its saved dtype, and its edit stays.
    assert seen_dtypes == [torch.bfloat16] * 4
    for state in resumed.state.values():
        assert not state["exp_avg"].any()


def test_resume_before_some_parameters_had_gradients():
    def run(split: int | None):
        torch.manual_seed(0)
        early, late = torch.nn.Parameter(torch.randn(5, 4)), torch.nn.Parameter(torch.randn(3, 6))
        optimizer = SpectralKron([early, late], lr=1e-2)
        for step in range(6):
            if step == split:
                checkpoint = serialise({"optimizer": optimizer.state_dict(), "params": [early, late]})
                loaded = deserialise(checkpoint)
                early = torch.nn.Parameter(loaded["params"][0])
                late = torch.nn.Parameter(loaded["params"][1])
                optimizer = SpectralKron([early, late], lr=1e-2)
                optimizer.load_state_dict(loaded["optimizer"])
            generator = torch.Generator().manual_seed(step)
            early.grad = torch.randn(5, 4, generator=generator)
            # The second weight gets its first gradient only at step 3.
            late.grad = torch.randn(3, 6, generator=generator) if step >= 3 else None
            optimizer.step()
        return early, late, optimizer

    straight = run(None)
    resumed = run(2)
    assert resumed[2].state_dict()["state"].keys() == straight[2].state_dict()["state"].keys()
    for a, b in zip(straight[:2], resumed[:2], strict=True):
        assert torch.equal(a, b)
    assert_identical(state_tensors(resumed[2]), state_tensors(straight[2]))


def test_load_onto_bfloat16_model():
    # A float32 run resumed on a bfloat16 copy of the model: with the default
    # state_dtype=None the momentum and bases follow the new parameters,
    # while eigenvalues, alpha and second moments stay float32 and load
    # unchanged.
    model = make_model(0)
    optimizer = SpectralKron(model.parameters())
    train_steps(model, optimizer, 4)
    low_model = make_model(0, torch.bfloat16)
    low_model.load_state_dict(model.state_dict())
    low = SpectralKron(low_model.parameters())
    low.load_state_dict(deserialise(serialise(optimizer.state_dict())))
    for param, source_param in zip(low_model.parameters(), model.parameters(), strict=True):
        state, source = low.state[param], optimizer.state[source_param]
        assert state["exp_avg"].dtype == torch.bfloat16
        assert torch.equal(state["exp_avg"], source["exp_avg"].to(torch.bfloat16))
        for key in ("exp_avg_sq", "exp_avg_sq_row", "exp_avg_sq_col"):
            if key in state:
                assert state[key].dtype == torch.float32
                assert torch.equal(state[key], source[key])
        if "B_C" in state:
            assert state["B_C"].dtype == torch.bfloat16
            assert torch.equal(state["d_C"], source["d_C"])
            assert torch.equal(state["alpha"], source["alpha"])
    losses = train_steps(low_model, low, 4, first_step=4)
    assert all(torch.isfinite(torch.tensor(losses)))


@requires_cuda
@pytest.mark.gpu
def test_load_onto_cuda():
    model = make_model(0)
    optimizer = SpectralKron(model.parameters(), state_dtype=torch.bfloat16)
    train_steps(model, optimizer, 3)
    cuda_model = make_model(0).cuda()
    cuda_model.load_state_dict(model.state_dict())
    cuda_optimizer = SpectralKron(cuda_model.parameters(), state_dtype=torch.bfloat16)
    cuda_optimizer.load_state_dict(deserialise(serialise(optimizer.state_dict()), map_location="cuda"))
    for param in cuda_model.parameters():
        for key, value in cuda_optimizer.state[param].items():
            assert value.device.type == ("cpu" if key == "step" else "cuda"), key
    x, y = (t.cuda() for t in (torch.randn(16, 1, 6, 6), torch.randint(6, (16,))))
    torch.nn.functional.cross_entropy(cuda_model(x), y).backward()
    cuda_optimizer.step()
    assert all(torch.isfinite(p).all() for p in cuda_model.parameters())


def test_state_dict_without_later_options_loads():
    later = {
        "max_cayley_squarings": None,
        "generator_norm": "auto",
        "max_side_ratio": None,  # no limit, as when the saved states were created
        "maximize": False,
        "distributed_refresh": False,
    }
    model = make_model(0)
    optimizer = SpectralKron(model.parameters(), lr=1e-2)
    train_steps(model, optimizer, 3)
    saved = deserialise(serialise(optimizer.state_dict()))
    for group in saved["param_groups"]:
        for name in later:
            del group[name]  # as saved by a release before these options existed

    resumed_model = make_model(0)
    resumed_model.load_state_dict(model.state_dict())
    resumed = SpectralKron(resumed_model.parameters(), lr=1.0)
    resumed.load_state_dict(saved)
    train_steps(model, optimizer, 2, first_step=3)
    train_steps(resumed_model, resumed, 2, first_step=3)

    for name, default in later.items():
        assert resumed.param_groups[0][name] == default, name
    expected = model.state_dict()
    for name, value in resumed_model.state_dict().items():
        assert torch.equal(value, expected[name]), name


def test_saved_state_dtype_as_dtype_loads():
    # A saved group names its state dtype by a string, but one edited by
    # hand may give a torch.dtype. The load casts the state to it.
    model = make_model(0)
    optimizer = SpectralKron(model.parameters(), lr=1e-2)
    train_steps(model, optimizer, 3)
    saved = optimizer.state_dict()
    saved["param_groups"][0]["state_dtype"] = torch.bfloat16

    resumed = SpectralKron(model.parameters(), lr=1e-2)
    resumed.load_state_dict(saved)
    assert resumed.param_groups[0]["state_dtype"] == "bfloat16"
    for param in model.parameters():
        state = resumed.state[param]
        assert state["exp_avg"].dtype == torch.bfloat16
        # The second moment of a bias and the eigenvalues of a weight stay float32.
        wide_key = "exp_avg_sq" if param.ndim == 1 else "d_C"
        assert state[wide_key].dtype == torch.float32
    train_steps(model, resumed, 1, first_step=3)
    assert all(torch.isfinite(param).all() for param in model.parameters())
