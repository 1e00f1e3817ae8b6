"""The optimizers compared in the optimizer benchmarks, built one way for all scripts.

Peers: torch.optim.AdamW, torch.optim.Muon (for 2-D weights, with AdamW for
the rest), and SOAP and Shampoo from pytorch-optimizer. Its ``ScalableShampoo``
is a port of Google's distributed Shampoo. All run eagerly, next to
:class:`spectral_es.optim.SpectralKron`. Every learning rate is in AdamW's
units: Muon scales it by ``0.2 sqrt(max(n, m))`` (``adjust_lr_fn=
"match_rms_adamw"``), SOAP runs Adam in its eigenbasis, Shampoo grafts to
RMSprop, and SpectralKron grafts to the Adam norm. SOAP and Shampoo refresh
their preconditioners every 10 steps (Shampoo from step 10 on).
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from importlib import metadata

import torch

from benchmarks.paper.paper_common import library_commit
from spectral_es.optim import SpectralKron

PEERS = ("AdamW", "Muon", "SOAP", "Shampoo", "SpectralKron")

# SpectralKron with other options: the label names what differs from the default.
VARIANTS = {
    "SpectralKron T=10": {"precondition_frequency": 10, "precond_lr": 0.3},
    "SpectralKron bf16 state": {"state_dtype": torch.bfloat16},
    "SpectralKron bf16 state, T=10": {"state_dtype": torch.bfloat16, "precondition_frequency": 10, "precond_lr": 0.3},
    "SpectralKron bf16 state, T=4": {"state_dtype": torch.bfloat16, "precondition_frequency": 4, "precond_lr": 0.2},
    "SpectralKron rms graft": {"graft": "rms"},
    "SpectralKron adam graft": {"graft": "adam"},
    "SpectralKron full": {"max_precond_dim": 4096},
    "SpectralKron truncated": {"cayley": "truncated"},
    "SpectralKron Frobenius cap": {"cayley": "truncated", "generator_norm": "frobenius", "max_cayley_squarings": 0},
}


class OptimizerChain:
    """Several optimizers stepped together (Muon for matrices, AdamW for the rest)."""

    def __init__(self, *optimizers: torch.optim.Optimizer) -> None:
        self.optimizers = list(optimizers)
        self.param_groups = [group for opt in self.optimizers for group in opt.param_groups]
        self.state = {key: value for opt in self.optimizers for key, value in opt.state.items()}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()
        self.state = {key: value for opt in self.optimizers for key, value in opt.state.items()}


def make_optimizer(name: str, params: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """Return optimizer ``name`` (from :data:`PEERS` or :data:`VARIANTS`) over ``params`` at AdamW-scale ``lr``."""
    params = list(params)
    if name == "AdamW":
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    if name == "Muon":
        matrices = [p for p in params if p.ndim == 2]
        others = [p for p in params if p.ndim != 2]
        muon = torch.optim.Muon(matrices, lr=lr, weight_decay=0.0, adjust_lr_fn="match_rms_adamw")
        if not others:
            return muon
        return OptimizerChain(muon, torch.optim.AdamW(others, lr=lr, weight_decay=0.0))
    if name == "SOAP":
        import pytorch_optimizer

        return pytorch_optimizer.SOAP(params, lr=lr, weight_decay=0.0, precondition_frequency=10)
    if name == "Shampoo":
        import pytorch_optimizer
        from pytorch_optimizer.optimizer.utils.graft import LayerWiseGrafting

        # Its RMSprop graft has no bias correction, so beta2 = 0.95 (not 0.999)
        # keeps the first steps from being up to 30x too long; momentum is a
        # moving average as in the other peers.
        return pytorch_optimizer.ScalableShampoo(
            params,
            lr=lr,
            betas=(0.9, 0.95),
            moving_average_for_momentum=True,
            weight_decay=0.0,
            start_preconditioning_step=10,
            preconditioning_compute_steps=10,
            graft_type=LayerWiseGrafting.RMSPROP,
        )
    if name == "SpectralKron" or name in VARIANTS:
        return SpectralKron(params, lr=lr, **VARIANTS.get(name, {}))
    raise ValueError(f"unknown optimizer {name!r}; expected one of {PEERS + tuple(VARIANTS)}")


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Return the bytes of all tensors reachable from the optimizer's state.

    Follows dicts, lists, tuples and object attributes, because some peers
    keep their preconditioners in helper objects; each tensor counts once.
    """
    seen: set[int] = set()
    total = 0
    for value in _tensors(dict(optimizer.state), seen):
        total += value.numel() * value.element_size()
    return total


def _tensors(value, seen: set[int]) -> Iterable[torch.Tensor]:
    if id(value) in seen:
        return
    seen.add(id(value))
    if torch.is_tensor(value):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item, seen)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors(item, seen)
    elif hasattr(value, "__dict__") and not isinstance(value, type):
        yield from _tensors(vars(value), seen)


def bfloat16_matmul_support() -> str:
    """Return which bfloat16 matrix instructions the CPU has, from /proc/cpuinfo.

    They decide the bfloat16 rows. On one thread of an Intel Xeon with AMX,
    a 1024 x 1024 bfloat16 product took 1.8 ms against 13 ms in float32.
    Optimizers that multiply in bfloat16, as Muon always does, therefore
    gain several times there.
    """
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), [])
    except OSError:
        return "bfloat16 matrix instructions unknown"
    if "amx_bf16" in flags:
        return "AMX-BF16"
    if "avx512_bf16" in flags:
        return "AVX512-BF16, no AMX"
    return "no bfloat16 matrix instructions"


def environment(module: str) -> dict[str, str]:
    """Return the command, machine, date and versions that a results page must state."""
    model = "unknown"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        pass
    model += f" ({bfloat16_matmul_support()})"
    versions = {"python": platform.python_version(), "torch": torch.__version__, "spectral_es": library_commit()}
    for package in ("numpy", "pytorch-optimizer", "scikit-learn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{model}, {torch.get_num_threads()} torch thread(s) of {os.cpu_count()} cores",
        "command": shlex.join(["python", "-m", module, *sys.argv[1:]]),
        "versions": ", ".join(f"{key} {value}" for key, value in versions.items()),
    }
