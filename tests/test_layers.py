"""Layers import one way: cli -> ofproto -> offload -> swpath -> dpif.

Reads every module's imports with ``ast`` (also imports inside functions and
TYPE_CHECKING blocks) and fails on any import that points up or sideways.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ORDER = ["dpif", "swpath", "offload", "ofproto", "cli"]  # low to high
ALLOWED = {pkg: set(ORDER[: i + 1]) for i, pkg in enumerate(ORDER)}


def imported_packages(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


def violations(pkg_dir: Path, pkg: str) -> list[str]:
    bad = []
    for py in sorted(pkg_dir.rglob("*.py")):
        for line, target in imported_packages(py):
            if target in ORDER and target not in ALLOWED[pkg]:
                bad.append(f"{py.relative_to(pkg_dir.parent)}:{line} imports {target}")
    return bad


@pytest.mark.parametrize("pkg", ORDER)
def test_package_imports_only_lower_layers(pkg: str) -> None:
    assert (ROOT / pkg).is_dir()
    assert violations(ROOT / pkg, pkg) == []


def test_checker_catches_an_upward_import(tmp_path: Path) -> None:
    (tmp_path / "dpif").mkdir()
    (tmp_path / "dpif" / "bad.py").write_text(
        "import os\nfrom typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ofproto.rule import Rule\n"
        "def f():\n    import swpath.cache\n")
    assert violations(tmp_path / "dpif", "dpif") == [
        "dpif/bad.py:4 imports ofproto", "dpif/bad.py:6 imports swpath"]
