"""The packages' imports run one way: cnmc is the core, the app never needs training, training never needs the Hub."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cnmc", "training", "serving", "hub")
# package -> what it must never import (directly); anything else of the project is allowed.
FORBIDDEN = {
    "cnmc": {"training", "serving", "hub", "gradio", "accelerate", "datasets", "evaluate"},
    "serving": {"training", "hub", "accelerate", "datasets", "evaluate"},
    "app": {"training", "hub", "accelerate", "datasets", "evaluate"},
    "training": {"hub", "serving", "gradio"},
}


def imported(package: str) -> dict[str, set[str]]:
    """Each top-level module name the package's files import, with the files that import it."""
    files = [ROOT / "app.py"] if package == "app" else sorted((ROOT / package).glob("*.py"))
    found: dict[str, set[str]] = {}
    for file in files:
        for node in ast.walk(ast.parse(file.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(file.name)
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_nothing_above_it(package):
    crossings = {name: files for name, files in imported(package).items() if name in FORBIDDEN[package]}
    assert not crossings, f"{package} imports {crossings}"


def test_no_two_packages_import_each_other():
    uses = {p: set(imported(p)) & set(PACKAGES) - {p} for p in PACKAGES}
    assert not [(a, b) for a in PACKAGES for b in uses[a] if a in uses[b]]
