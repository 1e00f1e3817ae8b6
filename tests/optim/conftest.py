"""Small models and losses shared by the optimizer tests."""

from __future__ import annotations

import pytest

try:
    import torch
except ImportError:  # torch is an optional extra: without it these tests are not collected
    torch = None
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(autouse=True)
def single_thread():
    """Run each optimizer test on one thread: small kernels on two busy cores
    are many times slower with two threads than with one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_model(seed: int = 0, dtype=None):
    """A conv layer, a linear layer and their biases: every routing path."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 4 * 4, 6),
    )
    return model.to(dtype) if dtype is not None else model


def batch(seed: int, dtype=None) -> tuple:
    dtype = dtype or torch.float32
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(16, 1, 6, 6, generator=generator, dtype=dtype), torch.randint(6, (16,), generator=generator)


def train_steps(model, optimizer, steps: int, first_step: int = 0) -> list[float]:
    """Take ``steps`` steps of cross-entropy, cycling over 4 fixed batches; return the losses."""
    dtype = next(model.parameters()).dtype
    losses = []
    for step in range(first_step, first_step + steps):
        x, y = batch(step % 4, dtype)
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
