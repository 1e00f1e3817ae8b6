"""SpectralKron under DistributedDataParallel: 2 gloo processes on the loopback interface."""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spectral_es.optim import SpectralKron
from spectral_es.optim import optimizer as optimizer_module
from tests.optim.conftest import batch, make_model, torch

STEPS = 6
# A rank that waits for a peer fails after this instead of torch's 30-minute default.
TIMEOUT = datetime.timedelta(seconds=120)


def spawn_ranks(function: Callable[[int, int, str], None], world_size: int, folder: Path, outputs: list[str]) -> None:
    """Run ``function(rank, world_size, folder)`` in ``world_size`` spawned processes and wait for them.

    NOTE: a gloo rank now and then aborts while its group is torn down
    ("terminate called without an active exception"), after its work: the
    distributed benchmark's quick run did so once in 25 runs on a busy
    2-core machine. A rank killed by a signal is therefore accepted when
    every file of ``outputs`` (names in ``folder``) was written, and the
    test then checks their contents. Otherwise the error is raised again.
    """
    try:
        torch.multiprocessing.spawn(function, args=(world_size, str(folder)), nprocs=world_size, join=True)
    except torch.multiprocessing.ProcessExitedException as error:
        if error.signal_name is None or not all((folder / name).exists() for name in outputs):
            raise


def run_in_group(rank: int, world_size: int, folder: str, work: Callable[[], None]) -> None:
    """Run ``work`` in a gloo group on the loopback interface, then tear the group down cleanly.

    The ranks meet through a file in ``folder``, which needs no free port.
    ``work`` keeps its models and optimizers in its own frame, so they are
    freed when it returns. A DistributedDataParallel model keeps a reference
    to the group, and a group that outlived ``destroy_process_group`` until
    interpreter exit made a rank abort ("terminate called without an active
    exception") in about 1 run in 10 of the split-refresh test.
    """
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    store = Path(folder) / "rendezvous"
    torch.distributed.init_process_group(
        "gloo", init_method=store.as_uri(), rank=rank, world_size=world_size, timeout=TIMEOUT
    )
    try:
        work()
        gc.collect()  # DDP's hooks form reference cycles
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def train_rank(rank: int, world_size: int, folder: str) -> None:
    """Train the shared model on this rank's own batches and save its state."""

    def work() -> None:
        model = make_model(0)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        optimizer = SpectralKron(ddp.parameters(), lr=1e-2, precondition_frequency=2)
        for step in range(STEPS):
            x, y = batch(100 * rank + step)
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(ddp(x), y).backward()
            optimizer.step()
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, Path(folder) / f"{rank}.pt")

    run_in_group(rank, world_size, folder, work)


def test_ranks_keep_identical_parameters_and_state(tmp_path):
    spawn_ranks(train_rank, 2, tmp_path, ["0.pt", "1.pt"])
    first, second = (torch.load(tmp_path / f"{rank}.pt", weights_only=True) for rank in (0, 1))
    for name, value in first["model"].items():
        assert torch.equal(value, second["model"][name]), name
    for index, state in first["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, second["optimizer"]["state"][index][key]), f"{index}/{key}"

    # The ranks saw different batches, so agreement is not trivial: a single
    # process on rank 0's batches alone ends elsewhere.
    model = make_model(0)
    optimizer = SpectralKron(model.parameters(), lr=1e-2, precondition_frequency=2)
    for step in range(STEPS):
        x, y = batch(step)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    assert not torch.equal(model[3].weight, first["model"]["3.weight"])


# Option sets of the split-refresh test: each "split" run must end bitwise where
# the "replicated" run with the same state dtype ends.
MODES = {
    "replicated": {},
    "split": {"distributed_refresh": True},
    "replicated bf16": {"state_dtype": "bfloat16"},
    "split bf16": {"distributed_refresh": True, "state_dtype": "bfloat16"},
    # Refreshes that leave their rotations to the next step (T >= 4), with
    # a Björck step in every period. With T = 5 the column factors rotate at
    # step 4, and the row factors' refresh at step 6 leaves its generators
    # pending at the end, so the broadcast generators are compared too.
    "replicated T=5": {"state_dtype": "bfloat16", "precondition_frequency": 5, "orthogonalize_every": 1},
    "split T=5": {
        "distributed_refresh": True,
        "state_dtype": "bfloat16",
        "precondition_frequency": 5,
        "orthogonalize_every": 1,
    },
}


def assert_same_run(run: dict, reference: dict, label: str) -> None:
    """Assert that the saved model and optimizer state of ``run`` equal those of ``reference``, bit for bit."""
    for name, value in reference["model"].items():
        assert torch.equal(run["model"][name], value), f"{label}: {name}"
    for index, state in reference["optimizer"]["state"].items():
        assert sorted(run["optimizer"]["state"][index]) == sorted(state), f"{label}: state {index}"
        for key, value in state.items():
            assert torch.equal(run["optimizer"]["state"][index][key], value), f"{label}: state {index}/{key}"


def train_ddp(model: torch.nn.Module, batches: list, **options) -> dict:
    """Train ``model`` under DistributedDataParallel on ``batches``; return its and the optimizer's state."""
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = SpectralKron(ddp.parameters(), lr=1e-2, **options)
    for x, y in batches:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(ddp(x), y).backward()
        optimizer.step()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict()}


@contextlib.contextmanager
def counted(name: str, count: Callable[..., int]) -> Iterator[dict[str, int]]:
    """Wrap the optimizer module's function ``name`` so that each call adds ``count(*args)`` to ``tally["total"]``.

    The optimizer looks the function up in its module at each call, so the
    wrapper intercepts every call of this process until the context exits.
    """
    original = getattr(optimizer_module, name)
    tally = {"total": 0}

    def wrapper(*args, **kwargs):
        tally["total"] += count(*args)
        return original(*args, **kwargs)

    setattr(optimizer_module, name, wrapper)
    try:
        yield tally
    finally:
        setattr(optimizer_module, name, original)


def train_modes(rank: int, world_size: int, folder: str) -> None:
    """Train one model per mode of MODES on this rank's batches; save states and refresh counts."""

    def work() -> None:
        results = {}
        for mode, options in MODES.items():
            for tally in (calls, rotations, stacked_rotations):
                tally["total"] = 0
            batches = [batch(100 * rank + step) for step in range(STEPS)]
            results[mode] = train_ddp(make_model(0), batches, **{"precondition_frequency": 2, **options})
            results[mode]["refreshes"] = calls["total"]
            results[mode]["rotations"] = rotations["total"] + stacked_rotations["total"]
        torch.save(results, Path(folder) / f"{rank}.pt")

    with (
        counted("kron_refresh", lambda *args: 1) as calls,
        counted("kron_rotate_pending", lambda *args: 1) as rotations,
        counted("kron_rotate_pending_stack", lambda *args: 1) as stacked_rotations,
    ):
        run_in_group(rank, world_size, folder, work)


def test_split_refresh_matches_replicated(tmp_path):
    spawn_ranks(train_modes, 2, tmp_path, ["0.pt", "1.pt"])
    ranks = [torch.load(tmp_path / f"{rank}.pt", weights_only=True) for rank in (0, 1)]

    for split, replicated in (
        ("split", "replicated"),
        ("split bf16", "replicated bf16"),
        ("split T=5", "replicated T=5"),
    ):
        reference = ranks[0][replicated]
        for rank, results in enumerate(ranks):
            assert_same_run(results[split], reference, f"{split}, rank {rank}")

        # Every refresh, and every deferred rotation, ran on exactly one
        # rank, and each rank ran some refreshes.
        counts = [results[split]["refreshes"] for results in ranks]
        assert sum(counts) == reference["refreshes"]
        assert all(count > 0 for count in counts)
        assert sum(results[split]["rotations"] for results in ranks) == reference["rotations"]
    assert ranks[0]["replicated T=5"]["rotations"] > 0


def test_refresh_owners_balance_work():
    weights = [torch.nn.Parameter(torch.randn(n, n)) for n in (64, 8, 32, 8)]
    optimizer = SpectralKron([{"params": weights[:3], "distributed_refresh": True}, {"params": weights[3:]}])
    refreshes = [
        optimizer_module._Refresh(group, param, optimizer._init_state(param, group), "C", False, "", {}, "", False)
        for group in optimizer.param_groups
        for param in group["params"]
    ]

    owners = optimizer_module._refresh_owners([[refresh] for refresh in refreshes], world_size=2)

    # The 64 x 64 refresh outweighs the others together, so it gets a rank of
    # its own. The last weight's group has no distributed_refresh, so every
    # rank runs that refresh.
    assert owners == [0, 1, 1, None]


def test_refresh_owners_spread_diagonal_factors():
    # Both sides are longer than max_precond_dim, so each weight keeps only diagonal factors.
    weights = [torch.nn.Parameter(torch.randn(12, 12)) for _ in range(4)]
    for weight in weights:
        weight.grad = torch.randn(12, 12)
    optimizer = SpectralKron(weights, max_precond_dim=8, distributed_refresh=True)
    group = optimizer.param_groups[0]
    refreshes = [
        optimizer_module._Refresh(group, param, optimizer._init_state(param, group), "C", False, "", {}, "", False)
        for param in weights
    ]

    stacks, owners = optimizer_module._refresh_plan(refreshes, world_size=2)

    # The four weights share a shape, so they form one stack, cut into one
    # part per rank.
    assert "B_C" not in refreshes[0].state
    positions = {id(refresh.param): position for position, refresh in enumerate(refreshes)}
    assert [[positions[id(refresh.param)] for refresh in stack] for stack in stacks] == [[0, 1], [2, 3]]
    assert owners == [0, 1]


def train_in_subgroup(rank: int, world_size: int, folder: str) -> None:
    """Ranks 0 and 1 train under DDP in a group of their own, with split and replicated refreshes; rank 2 waits."""

    def work() -> None:
        pair = torch.distributed.new_group([0, 1])  # every rank must take part in making a group
        if rank == 2:
            return
        batches = [batch(100 * rank + step) for step in range(STEPS)]
        results = {}
        for mode, options in (("split", {"distributed_refresh": True}), ("replicated", {})):
            model = make_model(0)
            ddp = torch.nn.parallel.DistributedDataParallel(model, process_group=pair)
            optimizer = SpectralKron(ddp.parameters(), lr=1e-2, precondition_frequency=2, process_group=pair, **options)
            for x, y in batches:
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(ddp(x), y).backward()
                optimizer.step()
            results[mode] = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
        torch.save(results, Path(folder) / f"{rank}.pt")

    run_in_group(rank, world_size, folder, work)


def test_split_refresh_in_process_group(tmp_path):
    # Three ranks, of which two form the group: with the default group, a
    # refresh could go to rank 2, which never steps, and the pair would wait
    # for its broadcast until the timeout.
    spawn_ranks(train_in_subgroup, 3, tmp_path, ["0.pt", "1.pt"])
    ranks = [torch.load(tmp_path / f"{rank}.pt", weights_only=True) for rank in (0, 1)]
    for rank, results in enumerate(ranks):
        assert_same_run(results["split"], ranks[0]["replicated"], f"rank {rank}")


def test_nccl_check_uses_a_parameter_gpu(monkeypatch):
    # NCCL needs the tensor on this rank's own GPU, which the parameters are on
    # even where torch.cuda.set_device was never called (no GPU is needed to
    # name a device).
    monkeypatch.setattr(torch.distributed, "get_backend", lambda group=None: "nccl")
    devices = [torch.device("cpu"), torch.device("cuda", 3), torch.device("cuda", 0)]
    assert optimizer_module._collective_device(None, devices) == torch.device("cuda", 3)
    monkeypatch.setattr(torch.distributed, "get_backend", lambda group=None: "gloo")
    assert optimizer_module._collective_device(None, devices) == torch.device("cpu")


def test_process_group_is_checked():
    weight = torch.nn.Parameter(torch.randn(3, 2))
    with pytest.raises(ValueError, match="invalid process_group 'world': expected None"):
        SpectralKron([weight], distributed_refresh=True, process_group="world")
    # A pickled optimizer has no group to restore, so it uses the default one.
    optimizer = pickle.loads(pickle.dumps(SpectralKron([weight])))
    assert optimizer.process_group is None


@pytest.mark.parametrize("value", [1, "yes", None])
def test_distributed_refresh_needs_bool(value):
    with pytest.raises(ValueError, match="invalid distributed_refresh"):
        SpectralKron([torch.nn.Parameter(torch.randn(3, 2))], distributed_refresh=value)


def train_different_weights(rank: int, world_size: int, folder: str) -> None:
    """Step rank-dependent weights, as ZeroRedundancyOptimizer shards them, with and without distributed_refresh.

    Save the error, or "no error", of each run.
    """

    def work() -> None:
        for split in (False, True):
            weight = torch.nn.Parameter(torch.randn(4 + rank, 3))
            optimizer = SpectralKron([weight], distributed_refresh=split)
            weight.grad = torch.ones_like(weight)
            try:
                optimizer.step()
                message = "no error"
            except RuntimeError as error:
                message = str(error)
            Path(folder, f"{rank}-{split}.txt").write_text(message)

    run_in_group(rank, world_size, folder, work)


def test_split_refresh_rejects_different_plans(tmp_path):
    outputs = [f"{rank}-{split}.txt" for rank in (0, 1) for split in (False, True)]
    spawn_ranks(train_different_weights, 2, tmp_path, outputs)
    for rank in (0, 1):
        # Without distributed_refresh each rank steps its own weights, and nothing is checked.
        assert (tmp_path / f"{rank}-False.txt").read_text() == "no error", f"rank {rank}"
        message = (tmp_path / f"{rank}-True.txt").read_text()
        assert "the ranks scheduled different factor refreshes" in message, f"rank {rank}: {message}"


def make_stacked_model() -> torch.nn.Module:
    """Five 8 x 8 layers, which SpectralKron steps as one stack, and a small head."""
    torch.manual_seed(0)
    layers = [module for _ in range(5) for module in (torch.nn.Linear(8, 8), torch.nn.Tanh())]
    return torch.nn.Sequential(*layers, torch.nn.Linear(8, 3))


def train_stacked_modes(rank: int, world_size: int, folder: str) -> None:
    """Train the stacked model replicated and split; save states and the weights each rank refreshed."""

    def work() -> None:
        results = {}
        for mode, options in (("replicated", {}), ("split", {"distributed_refresh": True})):
            refreshed["total"] = 0
            generator = torch.Generator().manual_seed(100 * rank)
            batches = [
                (torch.randn(16, 8, generator=generator), torch.randint(3, (16,), generator=generator))
                for _ in range(STEPS)
            ]
            results[mode] = train_ddp(make_stacked_model(), batches, precondition_frequency=1, **options)
            results[mode]["refreshed"] = refreshed["total"]
        torch.save(results, Path(folder) / f"{rank}.pt")

    # Each call refreshes a stack of weights, one state per weight.
    with counted("kron_refresh_stack", lambda states, *args: len(states)) as refreshed:
        run_in_group(rank, world_size, folder, work)


def test_split_refresh_of_stacks_matches_replicated(tmp_path):
    # The five 8 x 8 weights form one stack, which the split run cuts into
    # parts of 2 and 3 weights. The larger part costs more, so it goes to
    # rank 0 first. The owner of a part refreshes it and broadcasts the
    # factors into the other rank's rows of its stack.
    spawn_ranks(train_stacked_modes, 2, tmp_path, ["0.pt", "1.pt"])
    ranks = [torch.load(tmp_path / f"{rank}.pt", weights_only=True) for rank in (0, 1)]

    reference = ranks[0]["replicated"]
    for rank, results in enumerate(ranks):
        assert_same_run(results["split"], reference, f"rank {rank}")

    # Every stacked weight was refreshed on exactly one rank: 5 weights per step.
    assert reference["refreshed"] == 5 * STEPS
    assert [results["split"]["refreshed"] for results in ranks] == [3 * STEPS, 2 * STEPS]


def test_process_group_of_other_ranks_is_named():
    # torch.distributed.new_group returns this sentinel on a rank outside the new group.
    weight = torch.nn.Parameter(torch.randn(3, 2))
    outside = torch.distributed.GroupMember.NON_GROUP_MEMBER
    with pytest.raises(ValueError, match="NON_GROUP_MEMBER .* returns on the ranks outside the new group"):
        SpectralKron([weight], distributed_refresh=True, process_group=outside)


def train_period_edit(rank: int, world_size: int, folder: str) -> None:
    """Step two weights with T = 4, then T = 1 and a zero gradient while rotations are pending; save the states."""

    def work() -> None:
        results = {}
        for mode, options in (("replicated", {}), ("split", {"distributed_refresh": True})):
            generator = torch.Generator().manual_seed(0)  # the same gradients on every rank
            weights = [torch.nn.Parameter(torch.zeros(shape)) for shape in ((6, 5), (4, 6))]
            optimizer = SpectralKron(
                weights, lr=1e-2, precondition_frequency=4, orthogonalize_every=1, state_dtype="bfloat16", **options
            )
            for step in range(1, 7):
                for weight in weights:
                    weight.grad = torch.randn(weight.shape, generator=generator)
                if step == 6:
                    optimizer.param_groups[0]["precondition_frequency"] = 1
                    for weight in weights:
                        weight.grad.zero_()
                    with pytest.warns(optimizer_module.PreconditionerWarning, match="is all zeros"):
                        optimizer.step()
                else:
                    optimizer.step()
            model = {str(index): weight.detach() for index, weight in enumerate(weights)}
            results[mode] = {"model": model, "optimizer": optimizer.state_dict()}
        torch.save(results, Path(folder) / f"{rank}.pt")

    run_in_group(rank, world_size, folder, work)


def test_split_bjorck_step_with_pending_rotation(tmp_path):
    # Step 5 refreshes the row factors and leaves their rotations pending.
    # With T = 1 from step 6 on, step 6 schedules a refresh of both factors
    # with Björck steps, and its zero gradient leaves the rotation of B_C and
    # the Björck steps of B_C and B_K. The owner of each weight takes all
    # three, and the other rank must receive B_K too.
    spawn_ranks(train_period_edit, 2, tmp_path, ["0.pt", "1.pt"])
    ranks = [torch.load(tmp_path / f"{rank}.pt", weights_only=True) for rank in (0, 1)]
    for rank, results in enumerate(ranks):
        assert_same_run(results["split"], ranks[0]["replicated"], f"rank {rank}")
