"""SpectralKron under DistributedDataParallel: 2 gloo processes on the loopback interface."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from spectral_es.optim import SpectralKron
from tests.optim.conftest import batch, make_model, torch

STEPS = 6


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_rank(rank: int, world_size: int, port: int, folder: str) -> None:
    """Train the shared model on this rank's own batches and save its state."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        model = make_model(0)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        optimizer = SpectralKron(ddp.parameters(), lr=1e-2, precondition_frequency=2)
        for step in range(STEPS):
            x, y = batch(100 * rank + step)
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(ddp(x), y).backward()
            optimizer.step()
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, Path(folder) / f"{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_ranks_keep_identical_parameters_and_state(tmp_path):
    torch.multiprocessing.spawn(train_rank, args=(2, free_loopback_port(), str(tmp_path)), nprocs=2, join=True)
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
