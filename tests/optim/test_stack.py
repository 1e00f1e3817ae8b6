"""SpectralKron steps small weights of one shape as a stack, with the results of stepping each alone."""

from __future__ import annotations

import copy
import io

import pytest

import spectral_es.optim.optimizer as optimizer_module
from spectral_es.optim import PreconditionerWarning, SpectralKron, functional
from spectral_es.optim.functional import stack_state
from tests.optim.conftest import torch

CONFIGS = {
    "defaults": {},
    "refresh every step": {"precondition_frequency": 1},
    "bfloat16 state": {"state_dtype": torch.bfloat16},
    # Refreshes that leave their rotations to the next step (T >= 4), with
    # a Björck step in every period.
    "bfloat16, T=4, deferred rotations": {
        "state_dtype": torch.bfloat16,
        "precondition_frequency": 4,
        "orthogonalize_every": 1,
    },
    "truncated map with squarings": {"cayley": "truncated", "max_generator_norm": 0.05, "max_cayley_squarings": 3},
    "adam graft, root 4, decay, maximize": {"graft": "adam", "root": 4.0, "weight_decay": 0.1, "maximize": True},
}
# Full factors on both sides, a conv kernel, and a (3, 70) weight whose long side is diagonal.
SHAPES = [(12, 9), (6, 3, 2, 2), (3, 70)]


def least_squares_gradients(params, problems, sign=1.0):
    """Set each weight's gradient of 0.5 ||W X - T||^2 (W viewed as a matrix)."""
    for param, (X, T) in zip(params, problems, strict=True):
        W = param.detach().reshape(param.shape[0], -1).float()
        param.grad = (sign * (W @ X - T) @ X.T).reshape(param.shape).to(param.dtype)


def make_problems(shape, count, seed=0):
    generator = torch.Generator().manual_seed(seed)
    n, m = shape[0], torch.Size(shape[1:]).numel()
    weights = [torch.randn(shape, generator=generator) for _ in range(count)]
    problems = [
        (torch.randn(m, 2 * m, generator=generator), torch.randn(n, 2 * m, generator=generator)) for _ in weights
    ]
    return weights, problems


def stepped_stack(shape, count, steps):
    """Return ``count`` weights of ``shape``, their problems and a SpectralKron that stepped them ``steps`` times."""
    weights, problems = make_problems(shape, count)
    params = [torch.nn.Parameter(weight) for weight in weights]
    optimizer = SpectralKron(params, lr=0.01)
    for _ in range(steps):
        least_squares_gradients(params, problems)
        optimizer.step()
    return params, problems, optimizer


def factor(state, side):
    """S_side = B diag(d) B^T in float64 (B = I for a diagonal side)."""
    d = state[f"d_{side}"].double()
    if f"B_{side}" not in state:
        return torch.diag(d)
    B = state[f"B_{side}"].double()
    return (B * d) @ B.T


def relative(x, y):
    return ((x.double() - y.double()).norm() / y.double().norm()).item()


@pytest.fixture
def stack_calls(monkeypatch):
    """Record the parameter shapes of every stacked update and refresh."""
    calls = {"update": [], "refresh": []}

    def spy(name, real):
        def wrapper(first, grads, *args, **kwargs):
            calls[name].append([tuple(grad.shape) for grad in grads])
            return real(first, grads, *args, **kwargs)

        return wrapper

    monkeypatch.setattr(optimizer_module, "kron_update_stack", spy("update", optimizer_module.kron_update_stack))
    monkeypatch.setattr(optimizer_module, "kron_refresh_stack", spy("refresh", optimizer_module.kron_refresh_stack))
    return calls


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("options", CONFIGS.values(), ids=CONFIGS.keys())
def test_stack_matches_weights_stepped_alone(options, shape, stack_calls):
    # Batched and single products round differently (about 1e-7 relative in
    # float32), and 25 steps carry that into the factors. With the smooth
    # gradients of a least-squares loss the runs stayed within 5e-7 in
    # float32; a bfloat16 state rounds each product to 2^-9 relative, and
    # the runs stayed within 6e-3. A wrong stack (a weight given another's
    # factors or step count) differs at order 1.
    tolerance = 2e-2 if options.get("state_dtype") == torch.bfloat16 else 1e-4
    weights, problems = make_problems(shape, 4)
    together = [torch.nn.Parameter(weight.clone()) for weight in weights]
    alone = [torch.nn.Parameter(weight.clone()) for weight in weights]
    stacked = SpectralKron(together, lr=0.01, **options)
    separate = [SpectralKron([param], lr=0.01, **options) for param in alone]
    sign = -1.0 if options.get("maximize") else 1.0
    for _ in range(25):
        least_squares_gradients(together, problems, sign)
        least_squares_gradients(alone, problems, sign)
        stacked.step()
        for optimizer in separate:
            optimizer.step()

    assert len(stack_calls["update"]) == 25 and all(len(call) == 4 for call in stack_calls["update"])
    assert stack_calls["refresh"]
    for param, reference, optimizer in zip(together, alone, separate, strict=True):
        assert relative(param, reference) < tolerance
        state, expected = stacked.state[param], optimizer.state[reference]
        assert state["step"] == expected["step"]
        for side in "CK":
            assert relative(factor(state, side), factor(expected, side)) < tolerance
        assert relative(state["alpha"], expected["alpha"]) < tolerance
        assert relative(state["exp_avg"], expected["exp_avg"]) < tolerance


def test_stacks_split_by_shape_and_group(stack_calls):
    # Two shapes in one group, a third weight of the first shape in another
    # group, and one weight that misses a step and so lags one step behind.
    weights, problems = make_problems((8, 5), 4)
    others, other_problems = make_problems((5, 8), 2, seed=1)
    params = [torch.nn.Parameter(weight) for weight in weights + others]
    lagging, separate_group = params[0], params[3]
    group_params = [param for param in params if param is not separate_group]
    optimizer = SpectralKron([{"params": group_params}, {"params": [separate_group], "lr": 0.002}], lr=0.01)
    references = [torch.nn.Parameter(weight.clone()) for weight in weights + others]
    alone = [SpectralKron([param], lr=0.002 if index == 3 else 0.01) for index, param in enumerate(references)]
    all_problems = problems + other_problems
    for step in range(6):
        least_squares_gradients(params, all_problems)
        least_squares_gradients(references, all_problems)
        if step == 2:
            lagging.grad = references[0].grad = None
        optimizer.step()
        for reference_optimizer in alone:
            reference_optimizer.step()

    for call in stack_calls["update"]:
        assert len(set(call)) == 1  # one shape per stack
    # The two (5, 8) weights form a stack at every step. Weights 0, 1 and 2
    # form one at every step but the third, where weight 0 has no gradient,
    # because weight 3 is in another group. After that step weight 0 has
    # taken one step fewer than weights 1 and 2, and it rejoins their stack
    # with a bias correction of its own.
    sizes = sorted(len(call) for call in stack_calls["update"])
    assert sizes == [2] * 6 + [2] + [3] * 5
    assert optimizer.state[lagging]["step"] == 5
    assert optimizer.state[params[1]]["step"] == 6
    assert optimizer.state[lagging]["exp_avg"]._base is optimizer.state[params[1]]["exp_avg"]._base
    for param, reference in zip(params, references, strict=True):
        assert relative(param, reference) < 1e-4  # float32 rounding, as above


def test_large_weights_are_stepped_alone(stack_calls):
    # Above the size limit batched products stop paying off (a stacked step
    # of 256 x 256 weights took 1.1 times the separate ones on one CPU thread).
    side = int(optimizer_module._STACK_MAX_ELEMENTS**0.5) + 1
    weights, problems = make_problems((side, side), 2)
    params = [torch.nn.Parameter(weight) for weight in weights]
    optimizer = SpectralKron(params, lr=0.01)
    least_squares_gradients(params, problems)
    optimizer.step()
    assert stack_calls == {"update": [], "refresh": []}
    assert all(optimizer.state[param]["step"] == 1 for param in params)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64], ids=str)
def test_bias_correction_rows_match_division(dtype):
    # A stack whose weights have taken different numbers of steps divides
    # by a tensor of 1 - beta^t per row. Each row must come back bitwise as
    # the division of that weight alone by a Python number, which torch
    # computes in float32 for bfloat16 and float16 tensors on the CPU.
    steps = [1.0, 2.0, 7.0, 100.0, 12345.0]
    moments = (3 * torch.randn(len(steps), 9, 5, generator=torch.Generator().manual_seed(0))).to(dtype)
    for beta in (0.9, 0.95, 0.999):
        correction = functional._bias_correction(beta, steps, moments, 2)
        rows = (moments / correction).to(dtype)
        for row, moment, step in zip(rows, moments, steps, strict=True):
            assert torch.equal(row, moment / (1 - beta**step)), (beta, step)


def test_stacked_states_become_views_of_one_stack():
    # After the first stacked step each state tensor is a row of one stack,
    # so later steps update the stack in place without copying it.
    params, problems, optimizer = stepped_stack((8, 5), 3, steps=3)
    states = [optimizer.state[param] for param in params]
    for key in ("exp_avg", "B_C", "B_K", "d_C", "alpha"):
        base = states[0][key]._base
        assert base is not None and base.shape[0] == 3
        assert all(state[key]._base is base for state in states)
    before = states[0]["B_C"]._base
    least_squares_gradients(params, problems)
    optimizer.step()
    assert states[0]["B_C"]._base is before  # no new stack


def test_lagging_weight_refreshes_rows_in_place(stack_calls):
    # With precondition_frequency=2 a weight one step behind the others
    # refreshes the other side at every step, alone, while its update shares
    # their stack. Its refresh must move its rows of that stack in place:
    # copying its state out made the update stack every state afresh at
    # every step.
    weights, problems = make_problems((8, 5), 3)
    params = [torch.nn.Parameter(weight.clone()) for weight in weights]
    references = [torch.nn.Parameter(weight.clone()) for weight in weights]
    optimizer = SpectralKron(params, lr=0.01, precondition_frequency=2)
    alone = [SpectralKron([reference], lr=0.01, precondition_frequency=2) for reference in references]
    states = [optimizer.state[param] for param in params]
    bases = {}
    for step in range(6):
        least_squares_gradients(params, problems)
        least_squares_gradients(references, problems)
        if step == 0:
            params[2].grad = references[2].grad = None
        optimizer.step()
        for reference_optimizer in alone:
            reference_optimizer.step()
        if step == 2:  # the lagging weight has stepped twice, with a stack
            bases = {key: value._base for key, value in states[0].items() if key != "step"}

    assert all(len(call) == 3 for call in stack_calls["update"][1:])
    for key, base in bases.items():
        assert base is not None
        assert all(state[key]._base is base for state in states), key
    for param, reference in zip(params, references, strict=True):
        assert relative(param, reference) < 1e-4  # float32 rounding of batched products


def state_storage_bytes(optimizer):
    """Return the bytes of every distinct storage that the optimizer's state tensors use."""
    storages = {}
    for state in optimizer.state.values():
        for value in state.values():
            storages[value.untyped_storage().data_ptr()] = value.untyped_storage().nbytes()
    return sum(storages.values())


def state_bytes(optimizer):
    """Return the bytes of the state tensors themselves."""
    return sum(value.numel() * value.element_size() for state in optimizer.state.values() for value in state.values())


@pytest.mark.parametrize("missed_by", ["no gradient", "NaN gradient", "overflowing gradient"])
def test_skipped_weight_releases_its_stack(missed_by):
    # A weight that misses steps while the rest of its stack steps on (a
    # frozen layer, an unused branch) must not keep the old stack alive
    # through its views of one row. With 8 weights such a stack doubled the
    # state's memory and the size of every saved state_dict.
    # 64 x 64 weights make the state (about 400 kB) large against the
    # pickling overhead of a saved state_dict (about 15 kB).
    params, problems, optimizer = stepped_stack((64, 64), 8, steps=2)
    assert state_storage_bytes(optimizer) == state_bytes(optimizer)

    skipped = params[0]
    for _ in range(2):
        least_squares_gradients(params, problems)
        if missed_by == "no gradient":
            skipped.grad = None
            optimizer.step()
        elif missed_by == "NaN gradient":
            skipped.grad[0, 0] = float("nan")
            with pytest.warns(PreconditionerWarning, match="NaN"):
                optimizer.step()
        else:
            skipped.grad[0, 0] = 1e20  # an L1 norm above sqrt(float32 max) = 1.8e19
            with pytest.warns(PreconditionerWarning, match="L1 norm"):
                optimizer.step()

    assert all(value._base is None for value in optimizer.state[skipped].values())
    assert state_storage_bytes(optimizer) == state_bytes(optimizer)
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    # A kept 8-row stack would add 7/8 of the state again.
    assert len(buffer.getvalue()) < 1.25 * state_bytes(optimizer)


def test_skipped_weight_releases_copied_stack():
    # copy.deepcopy of an optimizer (or pickling it) keeps the stacks as
    # shared storages whose rows have no _base. A weight frozen afterwards
    # must still not keep such a storage alive: with 8 weights it held 7/8
    # of the state again.
    params, problems, optimizer = stepped_stack((64, 64), 8, steps=2)
    optimizer = copy.deepcopy(optimizer)
    params = optimizer.param_groups[0]["params"]
    assert optimizer.state[params[0]]["exp_avg"]._base is None
    assert state_storage_bytes(optimizer) == state_bytes(optimizer)

    for _ in range(2):
        least_squares_gradients(params, problems)
        params[0].grad = None
        optimizer.step()

    assert state_storage_bytes(optimizer) == state_bytes(optimizer)
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    assert len(buffer.getvalue()) < 1.25 * state_bytes(optimizer)  # as in the test above


def test_stacked_state_dict_round_trip():
    # Saving after stacked steps, loading with weights_only=True into a new
    # optimizer and continuing gives bitwise the run that never stopped: the
    # loaded tensors are stacked afresh, with the same values.
    weights, problems = make_problems((8, 5), 3)
    straight = [torch.nn.Parameter(weight.clone()) for weight in weights]
    resumed = [torch.nn.Parameter(weight.clone()) for weight in weights]
    first = SpectralKron(straight, lr=0.01, state_dtype=torch.bfloat16)
    second = SpectralKron(resumed, lr=0.01, state_dtype=torch.bfloat16)
    for _ in range(5):
        for params, optimizer in ((straight, first), (resumed, second)):
            least_squares_gradients(params, problems)
            optimizer.step()

    buffer = io.BytesIO()
    torch.save(second.state_dict(), buffer)
    buffer.seek(0)
    second = SpectralKron(resumed, lr=0.01, state_dtype=torch.bfloat16)
    second.load_state_dict(torch.load(buffer, weights_only=True))
    for _ in range(5):
        for params, optimizer in ((straight, first), (resumed, second)):
            least_squares_gradients(params, problems)
            optimizer.step()

    for param, reference in zip(resumed, straight, strict=True):
        assert torch.equal(param, reference)
        for key, value in second.state[param].items():
            assert torch.equal(value, first.state[reference][key]), key


def stepped_stack_of_20():
    """Return 20 weights of 16 x 16 and a SpectralKron that stepped them 3 times as one stack."""
    weights, problems = make_problems((16, 16), 20)
    params = [torch.nn.Parameter(weight) for weight in weights]
    optimizer = SpectralKron(params, lr=0.01)
    for _ in range(3):
        least_squares_gradients(params, problems)
        optimizer.step()
    return params, optimizer


def test_state_dict_entry_saves_only_its_weight():
    # A per-parameter checkpoint saves one entry of state_dict()["state"]
    # alone. torch.save writes each tensor's whole storage, so an entry of
    # rows would carry the stack of all 20 weights. The live state stays
    # rows of the stacks, so the next step does not restack.
    params, optimizer = stepped_stack_of_20()
    bases = {key: optimizer.state[params[0]][key]._base for key in ("B_C", "exp_avg")}
    assert all(base is not None for base in bases.values())

    entry = optimizer.state_dict()["state"][0]
    entry_bytes = sum(value.nbytes for value in entry.values())
    buffer = io.BytesIO()
    torch.save(entry, buffer)
    # The serialised tensors plus a few kilobytes of pickle and zip headers.
    assert len(buffer.getvalue()) < entry_bytes + 16_000
    assert len(buffer.getvalue()) < state_bytes(optimizer) / 4
    for key, value in entry.items():
        assert torch.equal(value, optimizer.state[params[0]][key]), key
    for key, base in bases.items():
        assert optimizer.state[params[0]][key]._base is base, key


def test_state_dict_post_hooks_see_copies():
    # As in torch.optim, a register_state_dict_post_hook hook receives the
    # state dict that state_dict() returns and may return another layout,
    # here one flat entry per tensor, as a sharded checkpoint keys them.
    # A hook that saves each entry must see copies, not rows of the stack.
    params, optimizer = stepped_stack_of_20()
    assert optimizer.state[params[0]]["exp_avg"]._base is not None

    seen = {}

    def record_storage(optimizer, state_dict):
        seen.update({key: value.untyped_storage().nbytes() for key, value in state_dict["state"][0].items()})

    def flatten(optimizer, state_dict):
        flat = {f"{index}.{key}": value for index, state in state_dict["state"].items() for key, value in state.items()}
        return {"state": flat, "param_groups": state_dict["param_groups"]}

    optimizer.register_state_dict_post_hook(record_storage)
    optimizer.register_state_dict_post_hook(flatten)
    state_dict = optimizer.state_dict()

    live = optimizer.state[params[0]]
    assert seen == {key: value.nbytes for key, value in live.items()}
    assert sorted(state_dict["state"]) == sorted(f"{index}.{key}" for index in range(20) for key in live)
    for key, value in live.items():
        assert torch.equal(state_dict["state"][f"0.{key}"], value), key


@pytest.mark.parametrize(
    "options",
    [{}, {"state_dtype": torch.bfloat16, "weight_decay": 0.1}, {"max_update_rms": 0.01, "maximize": True}],
    ids=["defaults", "bfloat16 state, decay", "clipped, maximize"],
)
def test_adam_path_foreach_matches_tensors_stepped_alone(options, monkeypatch):
    # The Adam path steps all biases of a group with one set of _foreach
    # operations, whose elementwise kernels are those of the single-tensor
    # step: the results are bitwise equal, also for a bias that lags a step.
    calls = []
    real = optimizer_module.adam_update_foreach
    monkeypatch.setattr(optimizer_module, "adam_update_foreach", lambda *args: calls.append(1) or real(*args))
    generator = torch.Generator().manual_seed(2)
    values = [torch.randn(size, generator=generator) for size in (5, 5, 9, 1)]
    together = [torch.nn.Parameter(value.clone()) for value in values]
    alone = [torch.nn.Parameter(value.clone()) for value in values]
    stacked = SpectralKron(together, lr=0.01, **options)
    separate = [SpectralKron([param], lr=0.01, **options) for param in alone]
    for step in range(6):
        for param, reference in zip(together, alone, strict=True):
            param.grad = torch.randn(param.shape, generator=generator)
            reference.grad = param.grad.clone()
        if step == 2:  # from here on the first bias has taken one step fewer
            together[0].grad = alone[0].grad = None
        stacked.step()
        for optimizer in separate:
            optimizer.step()

    assert len(calls) == 6
    for param, reference, optimizer in zip(together, alone, separate, strict=True):
        assert torch.equal(param, reference)
        for key, value in stacked.state[param].items():
            assert torch.equal(value, optimizer.state[reference][key]), key


def test_stacks_split_by_state_layout(stack_calls):
    # A conv kernel (6, 3, 2, 2) and a linear weight (6, 12) share the matrix
    # view (6, 12), but their momenta have different shapes, so they must
    # not share a stack. Apart, each takes the single-weight step, so the
    # results are bitwise those of separate optimizers.
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(6, 3, 2, 2, generator=generator), torch.randn(6, 12, generator=generator)]
    params = [torch.nn.Parameter(weight.clone()) for weight in weights]
    references = [torch.nn.Parameter(weight.clone()) for weight in weights]
    optimizer = SpectralKron(params, lr=0.01)
    alone = [SpectralKron([reference], lr=0.01) for reference in references]
    for _ in range(4):
        for param, reference in zip(params, references, strict=True):
            param.grad = torch.randn(param.shape, generator=generator)
            reference.grad = param.grad.clone()
        optimizer.step()
        for reference_optimizer in alone:
            reference_optimizer.step()

    assert stack_calls == {"update": [], "refresh": []}
    for param, reference in zip(params, references, strict=True):
        assert torch.equal(param, reference)


def test_refresh_stacks_split_by_bjorck_schedule(stack_calls):
    # With a refresh every step, weight 1 starts one step late, so at each
    # step one of the two weights takes a Björck step and the other does
    # not. Their refreshes have the same sides, and a shared stack would
    # give both the first weight's choice. Apart, each takes the
    # single-weight step, so the results are bitwise those of separate
    # optimizers.
    weights, problems = make_problems((8, 5), 2)
    params = [torch.nn.Parameter(weight.clone()) for weight in weights]
    references = [torch.nn.Parameter(weight.clone()) for weight in weights]
    options = {"lr": 0.01, "precondition_frequency": 1, "orthogonalize_every": 2, "state_dtype": torch.bfloat16}
    optimizer = SpectralKron(params, **options)
    alone = [SpectralKron([reference], **options) for reference in references]
    for step in range(6):
        least_squares_gradients(params, problems)
        least_squares_gradients(references, problems)
        if step == 0:
            params[1].grad = references[1].grad = None
        optimizer.step()
        for reference_optimizer in alone:
            reference_optimizer.step()

    # Their updates share a stack, each with its own bias correction, so the
    # results agree up to the bfloat16 rounding of batched products (see
    # test_stack_matches_weights_stepped_alone).
    assert stack_calls["refresh"] == []
    assert stack_calls["update"]
    for param, reference, reference_optimizer in zip(params, references, alone, strict=True):
        assert relative(param, reference) < 2e-2
        state, expected = optimizer.state[param], reference_optimizer.state[reference]
        assert relative(factor(state, "C"), factor(expected, "C")) < 2e-2


def test_stack_state_reuses_rows_and_parts():
    states = [{"B": torch.full((3, 3), float(i))} for i in range(4)]
    stack = stack_state(states, ["B"])["B"]
    assert all(state["B"]._base is stack for state in states)
    assert stack_state(states, ["B"])["B"] is stack  # the same rows: no copy

    # A run of consecutive rows, such as one rank's part of a stack, is a slice
    # of the stack when asked for a part, so refreshing it in place updates the
    # states. Asked for as a stack of its own, it is copied, and the states
    # follow the copy.
    part = stack_state(states[1:3], ["B"], part=True)["B"]
    part.add_(10)
    assert part.data_ptr() == stack[1].data_ptr()
    assert [state["B"][0, 0].item() for state in states] == [0.0, 11.0, 12.0, 3.0]
    alone = stack_state(states[1:3], ["B"])["B"]
    assert alone.data_ptr() != stack[1].data_ptr()
    assert states[1]["B"]._base is alone
    assert states[0]["B"]._base is stack


def test_scattered_refresh_keeps_states_in_their_stack():
    # Every other weight misses the first step, so at each later step the
    # weights that refresh are every other row of the update's stack. Their
    # factors are gathered and written back, and the states stay rows of one
    # stack instead of being copied into a new one at every step.
    weights, problems = make_problems((8, 5), 6)
    params = [torch.nn.Parameter(weight.clone()) for weight in weights]
    references = [torch.nn.Parameter(weight.clone()) for weight in weights]
    optimizer = SpectralKron(params, lr=0.01)
    alone = [SpectralKron([reference], lr=0.01) for reference in references]
    bases = []
    for step in range(8):
        least_squares_gradients(params, problems)
        least_squares_gradients(references, problems)
        if step == 0:
            for index in (1, 3, 5):
                params[index].grad = references[index].grad = None
        optimizer.step()
        for reference_optimizer in alone:
            reference_optimizer.step()
        bases.append(optimizer.state[params[0]]["B_C"]._base)

    assert [optimizer.state[param]["step"].item() for param in params] == [8, 7, 8, 7, 8, 7]
    assert all(base is bases[2] for base in bases[2:])
    assert all(optimizer.state[param]["B_C"]._base is bases[-1] for param in params)
    for param, reference, reference_optimizer in zip(params, references, alone, strict=True):
        assert relative(param, reference) < 1e-4  # float32 rounding, as in the tests above
        state, expected = optimizer.state[param], reference_optimizer.state[reference]
        for side in "CK":
            assert relative(factor(state, side), factor(expected, side)) < 1e-4


@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    "lagging",
    [(), (1, 3), (2,)],
    ids=["whole stack", "every other row", "one row"],
)
def test_deferred_rotations_write_their_rows(state_dtype, lagging):
    # With T = 4 and a Björck step in every period, weights that miss the
    # first step take their refreshes, Björck steps and deferred rotations
    # one step after the others: as a stack of every other row, or as one
    # row of the update's stack. Before each step every eigenbasis is
    # stretched by 5%, and only a Björck step brings it back to within 0.4%
    # of orthogonal. An eigenbasis whose Björck step or rotation was lost
    # or written into another row therefore ends up about 5% away from
    # that of a separate optimizer. Stacked and single
    # products differ by rounding alone: about 1e-7 relative in float32 and
    # 2^-9 per product in bfloat16, hence the tolerances.
    tolerance = 1e-2 if state_dtype == torch.bfloat16 else 1e-4
    options = {"lr": 0.01, "precondition_frequency": 4, "orthogonalize_every": 1, "state_dtype": state_dtype}
    weights, problems = make_problems((8, 5), 4)
    params = [torch.nn.Parameter(weight.clone()) for weight in weights]
    references = [torch.nn.Parameter(weight.clone()) for weight in weights]
    optimizer = SpectralKron(params, **options)
    alone = [SpectralKron([reference], **options) for reference in references]
    bases = []
    for step in range(9):
        least_squares_gradients(params, problems)
        least_squares_gradients(references, problems)
        if step == 0:
            for index in lagging:
                params[index].grad = references[index].grad = None
        for param, reference, reference_optimizer in zip(params, references, alone, strict=True):
            for key in ("B_C", "B_K") if step > 1 else ():
                optimizer.state[param][key].mul_(1.05)
                reference_optimizer.state[reference][key].mul_(1.05)
        optimizer.step()
        for reference_optimizer in alone:
            reference_optimizer.step()
        bases.append({key: optimizer.state[params[0]][key]._base for key in ("B_C", "B_K")})

    steps = [int(optimizer.state[param]["step"]) for param in params]
    assert steps == [8 if index in lagging else 9 for index in range(4)]
    # From the second step on, when every weight has stepped, the eigenbases
    # stay rows of one stack: Björck steps and rotations move them in place.
    for key in ("B_C", "B_K"):
        base = bases[1][key]
        assert base is not None
        assert all(step_bases[key] is base for step_bases in bases[1:]), key
        assert all(optimizer.state[param][key]._base is base for param in params), key
    for param, reference, reference_optimizer in zip(params, references, alone, strict=True):
        assert relative(param, reference) < tolerance
        for key in ("B_C", "B_K"):
            state, expected = optimizer.state[param], reference_optimizer.state[reference]
            assert relative(state[key], expected[key]) < tolerance, key


def test_period_edit_keeps_pending_rotations_apart():
    # Weights 1 and 3 miss the first step. At step 5 the others refresh
    # their row factors and leave the rotations pending, and then T drops
    # from 4 to 1. At the next step all four refresh both factors with
    # Björck steps, but only weights 0 and 2 have a rotation to take first,
    # so they must form a stack apart from weights 1 and 3. Stacked and
    # single float32 products differ by about 1e-7 relative per product, so
    # 1e-4 is far above rounding. The rotations of step 6 move B_C by more
    # than 50% relative (generators of Frobenius norm about 1), so a lost
    # or misplaced one misses by far more.
    options = {"lr": 0.01, "precondition_frequency": 4, "orthogonalize_every": 1}
    weights, problems = make_problems((8, 5), 4)
    params = [torch.nn.Parameter(weight.clone()) for weight in weights]
    references = [torch.nn.Parameter(weight.clone()) for weight in weights]
    optimizer = SpectralKron(params, **options)
    alone = [SpectralKron([reference], **options) for reference in references]
    for step in range(8):
        least_squares_gradients(params, problems)
        least_squares_gradients(references, problems)
        if step == 0:
            for index in (1, 3):
                params[index].grad = references[index].grad = None
        if step == 5:
            assert [functional.pending_sides(optimizer.state[param]) for param in params] == ["C", "", "C", ""]
            for changed in (optimizer, *alone):
                changed.param_groups[0]["precondition_frequency"] = 1
        optimizer.step()
        for reference_optimizer in alone:
            reference_optimizer.step()

    for param, reference, reference_optimizer in zip(params, references, alone, strict=True):
        state, expected = optimizer.state[param], reference_optimizer.state[reference]
        assert functional.pending_sides(state) == ""
        assert relative(param, reference) < 1e-4
        for key in ("B_C", "B_K"):
            assert relative(state[key], expected[key]) < 1e-4, key
