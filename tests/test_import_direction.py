"""The packages depend on each other in one direction only: core <- shared <- pipelines, serve <- cli.

Every ``.py`` file of each package is parsed (no import is executed) and every ``import`` / ``from ... import``
statement is checked, wherever it is (top level, inside functions, under ``TYPE_CHECKING``), as are literal
``importlib.import_module("...")`` calls. Relative imports resolve to the importing file's own package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = ("ldeq_core", "ldeq_shared", "pipelines", "serve", "ldeq_cli")
ALLOWED: dict[str, set[str]] = {  # package -> our packages it may import (itself always)
    "ldeq_core": set(),
    "ldeq_shared": {"ldeq_core"},
    "pipelines": {"ldeq_core", "ldeq_shared"},
    "serve": {"ldeq_core", "ldeq_shared"},
    "ldeq_cli": {"ldeq_core", "ldeq_shared", "pipelines", "serve"},
}


def imported_modules(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, dotted module name) of every import in ``path``; relative imports become ``package`` names."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: inside the file's own package
                found.append((node.lineno, f"{package}.{node.module or ''}".rstrip(".")))
            elif node.module:
                found.append((node.lineno, node.module))
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__"))
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def violations(package: str) -> list[str]:
    """``file:line: import`` for each import of ``package`` that goes against the allowed direction."""
    bad = []
    for path in sorted((REPO / package).rglob("*.py")):
        for line, module in imported_modules(path, package):
            top = module.split(".", 1)[0]
            if top in OURS and top != package and top not in ALLOWED[package]:
                bad.append(f"{path.relative_to(REPO)}:{line}: imports {module}")
    return bad


@pytest.mark.parametrize("package", [p for p in OURS if p != "ldeq_cli"])
def test_import_direction(package: str) -> None:
    assert (REPO / package / "__init__.py").is_file()
    bad = violations(package)
    allowed = ", ".join(sorted(ALLOWED[package])) or "none of ldeq's other packages"
    assert not bad, f"{package} may import only {allowed}; found:\n" + "\n".join(bad)


def test_the_checker_sees_every_kind_of_import(tmp_path: Path) -> None:
    src = tmp_path / "mod.py"
    src.write_text(
        "import serve.app\n"
        "from pipelines.prepare import prepare\n"
        "from . import sibling\n"
        "from .sub import x\n"
        "def f():\n"
        "    import ldeq_cli.main\n"
        "    importlib.import_module('pipelines.shards')\n"
        "from ray import serve\n"
    )
    assert sorted(imported_modules(src, "ldeq_shared")) == [
        (1, "serve.app"),
        (2, "pipelines.prepare"),
        (3, "ldeq_shared"),
        (4, "ldeq_shared.sub"),
        (6, "ldeq_cli.main"),
        (7, "pipelines.shards"),
        (8, "ray"),
    ]
