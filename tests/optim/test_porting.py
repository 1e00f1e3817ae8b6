"""The table of docs/optimizer.md that maps other optimizers' options to SpectralKron's."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from spectral_es.optim import SpectralKron
from tests.optim.conftest import torch

GUIDE = Path(__file__).parents[2] / "docs" / "optimizer.md"


def table_rows() -> list[tuple[list[str], str, str]]:
    """Return ``(their options, optimizers, SpectralKron cell)`` for each row of the guide's porting table."""
    rows = []
    for line in GUIDE.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            rows.append((re.findall(r"`([^`]+)`", cells[0]), cells[1], cells[2]))
    return rows


ROWS = table_rows()
OPTIONS = list(inspect.signature(SpectralKron.__init__).parameters)[2:]


def keyword_error(keyword: str) -> str:
    with pytest.raises(TypeError) as raised:
        SpectralKron([torch.nn.Parameter(torch.randn(3, 2))], **{keyword: 1})
    return str(raised.value)


def test_table_was_read():
    # Guards the parser: a changed table layout must not leave the checks below empty.
    assert len(ROWS) >= 20
    assert (["momentum"], "Muon", "`betas[0]`") in ROWS


@pytest.mark.parametrize(("names", "cell"), [(names, cell) for names, _, cell in ROWS], ids=lambda v: str(v))
def test_row_matches_keyword_error(names, cell):
    target = re.match(r"`(\w+)", cell)
    for name in names:
        message = keyword_error(name)
        assert name not in OPTIONS
        assert message.startswith(f"SpectralKron() got an unexpected keyword argument '{name}'; ")
        if cell.startswith("none"):
            # Advice comes before the list of accepted options.
            assert not message.startswith(f"SpectralKron() got an unexpected keyword argument '{name}'; the options")
        else:
            assert target is not None
            assert target.group(1) in message


def peer_parameters(optimizer: str) -> list[str] | None:
    """Return the keywords of a peer that is importable here, or None."""
    classes = {"AdamW": "torch.optim.AdamW", "Muon": "torch.optim.Muon"}
    if optimizer in classes:
        module, name = classes[optimizer].rsplit(".", 1)
        return list(inspect.signature(getattr(__import__(module, fromlist=[name]), name).__init__).parameters)
    if optimizer in ("SOAP", "ScalableShampoo"):
        try:
            import pytorch_optimizer
        except ImportError:  # the optim-bench extra brings it, the test extra does not
            return None
        return list(inspect.signature(getattr(pytorch_optimizer, optimizer).__init__).parameters)
    return None


@pytest.mark.parametrize(
    ("names", "optimizers"), [(names, optimizers) for names, optimizers, _ in ROWS], ids=lambda v: str(v)
)
def test_row_names_the_peers_option(names, optimizers):
    # Each importable peer of the row takes every name of the row. No extra installs
    # Distributed Shampoo, so its rows are checked against SpectralKron only.
    checked = [peer_parameters(optimizer) for optimizer in optimizers.split(", ")]
    checked = [parameters for parameters in checked if parameters is not None]
    if not checked:
        pytest.skip(f"{optimizers} is not importable here")
    for parameters in checked:
        assert set(names) <= set(parameters)


@pytest.mark.parametrize("name", ["lr", "betas", "eps", "weight_decay", "maximize"])
def test_same_options_as_adamw(name):
    assert name in OPTIONS
    assert name in inspect.signature(torch.optim.AdamW.__init__).parameters


def test_differing_defaults_are_as_stated():
    defaults = inspect.signature(SpectralKron.__init__).parameters
    assert defaults["weight_decay"].default == 0.0
    assert inspect.signature(torch.optim.AdamW.__init__).parameters["weight_decay"].default == 0.01
    assert defaults["precondition_frequency"].default == 2
    optimizers = pytest.importorskip("pytorch_optimizer")
    soap = inspect.signature(optimizers.SOAP.__init__).parameters
    assert soap["precondition_frequency"].default == 10
    assert soap["lr"].default == 3e-3
    assert soap["betas"].default == (0.95, 0.95)
    assert soap["weight_decay"].default == 0.01
    assert defaults["lr"].default == 1e-3
    assert defaults["betas"].default == (0.9, 0.999)


def test_kernel_layout_keeps_step():
    # The data_format row. SOAP's data_format="channels_last" means a kernel
    # stored as (out, kh, kw, in). Such a kernel, or one in channels_last memory,
    # takes the same steps as (out, in, kh, kw): the (out, rest) view only
    # permutes the columns, and every factor and the graft permute with them.
    torch.manual_seed(0)
    kernel = torch.randn(8, 4, 3, 3)
    grads = [torch.randn_like(kernel) for _ in range(6)]
    plain = torch.nn.Parameter(kernel.clone())
    memory = torch.nn.Parameter(kernel.clone().to(memory_format=torch.channels_last))
    ordered = torch.nn.Parameter(kernel.permute(0, 2, 3, 1).contiguous())
    optimizers = [SpectralKron([param], lr=1e-2) for param in (plain, memory, ordered)]
    for grad in grads:
        plain.grad = grad.clone()
        memory.grad = grad.clone().to(memory_format=torch.channels_last)
        ordered.grad = grad.permute(0, 2, 3, 1).contiguous()
        for optimizer in optimizers:
            optimizer.step()
    assert torch.equal(memory.detach(), plain.detach())
    # Summing the same products in another order changes float32 rounding only:
    # after 6 steps of lr 1e-2 the weights differed by 2.4e-7, so 1e-5 is loose.
    torch.testing.assert_close(ordered.detach().permute(0, 3, 1, 2), plain.detach(), rtol=0, atol=1e-5)
