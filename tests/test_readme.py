"""The README's table of optional extras against what the benchmark scripts import."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Third-party modules of the benchmark scripts and the extra of pyproject.toml
# that installs each. numpy and the standard library need no extra.
MODULE_EXTRAS = {
    "cma": "bench",
    "scipy": "bench",
    "matplotlib": "bench",
    "torch": "torch",
    "sklearn": "optim-bench",
    "pytorch_optimizer": "optim-bench",
    "dask": "distributed",
    "distributed": "distributed",
}


def read_extras_table() -> dict[str, str]:
    """Read the "for" cell of each row of the README's "Optional extras" table, by extra."""
    rows = {}
    in_section = False
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            in_section = line == "## Optional extras"
        elif in_section and line.startswith("| `"):
            extra, _brings, purpose = (cell.strip() for cell in line.strip("|").split("|"))
            rows[extra.strip("`")] = purpose
    return rows


def imported_modules(folder: Path) -> set[str]:
    """Collect the top-level names of the modules that the scripts in folder import."""
    modules = set()
    for script in folder.glob("*.py"):
        for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module.split(".")[0])
    return modules


def test_bench_extra_row_covers_paper_scripts():
    # The README offers the bench extra for the paper reproductions, so its row must
    # name every other extra whose modules a script in benchmarks/paper imports.
    purpose = read_extras_table()["bench"]
    modules = imported_modules(ROOT / "benchmarks" / "paper")
    needed = {MODULE_EXTRAS[module] for module in modules if module in MODULE_EXTRAS} - {"bench"}

    assert "paper reproductions" in purpose
    for extra in sorted(needed):
        assert f"`{extra}`" in purpose, (
            f"the README's bench row omits the {extra} extra, which benchmarks/paper imports; name it there"
        )
