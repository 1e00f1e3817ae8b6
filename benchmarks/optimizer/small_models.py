"""Time one optimizer step on small models, where each weight's fixed cost dominates.

Three models whose weights have at most a few thousand entries: an MLP
(five 128 x 128 hidden layers), a 6-layer transformer encoder (width 64,
4 heads, feed-forward width 256) and a small convnet on 8 x 8 images. Each
optimizer steps its own copy of the model on the same batches, and the
optimizers take their steps in turn. The step times are reported as
ratios to AdamW's median in the same run, next to the time of one forward
and backward pass. ``SpectralKron, unstacked`` is SpectralKron with its
stacking of same-shape small weights switched off, so its ratio to
``SpectralKron`` is what stacking saves. Muon takes the 2-D weights and
AdamW the rest (conv kernels and biases included). A second table times
SpectralKron alone on k square weights of one shape, stacked against
stepped one by one. Its sizes lie on both sides of the stacking limit of
128 x 128 entries, which is raised for the larger ones. One torch thread,
denormals flushed.

Run from the repository root (needs ``pip install -e ".[optim-bench]"``):

    python -m benchmarks.optimizer.small_models          # 10 steps: under a minute
    python -m benchmarks.optimizer.small_models --full   # 30 steps, for RESULTS.md

Only ``--full`` writes ``results/`` and the page; the quick run writes the
git-ignored ``results/quick/`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

import spectral_es.optim.optimizer as optimizer_module
from benchmarks.optimizer import report
from benchmarks.optimizer.digits import build_model
from benchmarks.optimizer.peers import environment, make_optimizer
from spectral_es.optim import SpectralKron

OPTIMIZERS = ("AdamW", "Muon", "SOAP", "SpectralKron", "SpectralKron, T=10", "SpectralKron, unstacked")
LEARNING_RATE = 1e-3


class Encoder(torch.nn.Module):
    """Six transformer encoder layers and a linear head on the mean over the sequence."""

    def __init__(self) -> None:
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(64, 4, dim_feedforward=256, dropout=0.0, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, 6, enable_nested_tensor=False)
        self.head = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).mean(dim=1))


def make_mlp() -> torch.nn.Module:
    layers: list[torch.nn.Module] = [torch.nn.Linear(64, 128), torch.nn.ReLU()]
    for _ in range(5):
        layers += [torch.nn.Linear(128, 128), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers, torch.nn.Linear(128, 10))


def make_convnet() -> torch.nn.Module:
    """Return the convnet of the digits benchmark (16 and 32 channels, a 512-64-10 head)."""
    return build_model("convnet", seed=0)


# name: (model factory, input shape of one batch)
MODELS: dict[str, tuple[Callable[[], torch.nn.Module], tuple[int, ...]]] = {
    "mlp": (make_mlp, (64, 64)),
    "transformer": (Encoder, (32, 16, 64)),
    "convnet": (make_convnet, (64, 1, 8, 8)),
}


# (side, count) of the square weights of the stacking table.
STACK_CASES = ((64, 20), (128, 8), (256, 8), (512, 4))


@contextlib.contextmanager
def stack_limit(elements: int) -> Iterator[None]:
    """Set SpectralKron's largest stacked weight to ``elements`` entries until the block ends."""
    limit = optimizer_module._STACK_MAX_ELEMENTS
    optimizer_module._STACK_MAX_ELEMENTS = elements
    try:
        yield
    finally:
        optimizer_module._STACK_MAX_ELEMENTS = limit


def stacking_off() -> contextlib.AbstractContextManager[None]:
    """Make SpectralKron step every weight alone until the block ends."""
    return stack_limit(0)


def build(name: str, model: torch.nn.Module) -> torch.optim.Optimizer:
    if name == "SpectralKron, T=10":
        return SpectralKron(model.parameters(), lr=LEARNING_RATE, precondition_frequency=10, precond_lr=0.3)
    if name.startswith("SpectralKron"):
        return SpectralKron(model.parameters(), lr=LEARNING_RATE)
    return make_optimizer(name, model.parameters(), LEARNING_RATE)


def time_model(model_name: str, names: Sequence[str], steps: int) -> dict:
    """Return the step times of every optimizer and the forward and backward times on one model."""
    factory, input_shape = MODELS[model_name]
    torch.manual_seed(0)
    reference = factory()
    models = {}
    for name in names:
        models[name] = factory()
        models[name].load_state_dict(reference.state_dict())
    optimizers = {name: build(name, models[name]) for name in names}

    generator = torch.Generator().manual_seed(1)
    times: dict[str, list[float]] = {name: [] for name in names}
    passes: list[float] = []
    for step in range(steps + 1):
        x = torch.randn(input_shape, generator=generator)
        y = torch.randint(10, (input_shape[0],), generator=generator)
        for name in names:
            began = time.perf_counter()
            optimizers[name].zero_grad()
            torch.nn.functional.cross_entropy(models[name](x), y).backward()
            if name == names[0]:
                passes.append(time.perf_counter() - began)
            context = stacking_off() if name.endswith("unstacked") else contextlib.nullcontext()
            with context:
                began = time.perf_counter()
                optimizers[name].step()
                elapsed = time.perf_counter() - began
            if step > 0:  # the first step creates the state
                times[name].append(elapsed)

    matrices = [param for param in reference.parameters() if param.ndim >= 2]
    return {
        "model": model_name,
        "parameters": sum(param.numel() for param in reference.parameters()),
        "weights": len(matrices),
        "shapes": len({tuple(param.shape) for param in matrices}),
        "forward_backward": statistics.median(passes[1:]),
        "median": {name: statistics.median(values) for name, values in times.items()},
        "mean": {name: statistics.mean(values) for name, values in times.items()},
    }


def time_stacks(side: int, count: int, steps: int) -> dict:
    """Return SpectralKron's median step time on ``count`` square weights, stacked and one by one."""
    generator = torch.Generator().manual_seed(2)
    start = [torch.randn(side, side, generator=generator) for _ in range(count)]
    modes = {"stacked": side * side, "alone": 0}  # the stack size limit of each mode
    copies = {mode: [torch.nn.Parameter(value.clone()) for value in start] for mode in modes}
    optimizers = {mode: SpectralKron(copies[mode], lr=LEARNING_RATE) for mode in modes}
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for step in range(steps + 1):
        gradients = [torch.randn(side, side, generator=generator) for _ in start]
        for mode in modes:
            for param, gradient in zip(copies[mode], gradients, strict=True):
                param.grad = gradient
            with stack_limit(modes[mode]):
                began = time.perf_counter()
                optimizers[mode].step()
                elapsed = time.perf_counter() - began
            if step > 0:
                times[mode].append(elapsed)
    return {"side": side, "count": count, **{mode: statistics.median(values) for mode, values in times.items()}}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="30 steps; writes results/ and RESULTS.md")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS), help="models to run")
    parser.add_argument(
        "--out", type=Path, help="folder for small_models.json (default results/quick/, full: results/)"
    )
    args = parser.parse_args(argv)
    args.out = report.output_folder(parser, args.full, args.out)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    steps = 30 if args.full else 10
    rows = [time_model(model, OPTIMIZERS, steps) for model in args.models]
    stacks = [time_stacks(side, count, steps) for side, count in STACK_CASES]
    record = {
        "environment": environment("benchmarks.optimizer.small_models"),
        "steps": steps,
        "rows": rows,
        "stacks": stacks,
    }
    print("\n".join(report.small_models_table(record)))
    report.save(record, args.out, "small_models")


if __name__ == "__main__":
    main()
