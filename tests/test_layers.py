"""Dependencies point inward: the engine and the platform adapters never import
the bot (each owns its config; the bot assembles them)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("package", ["engine", "adapters"])
def test_inner_packages_never_import_the_bot(package: str) -> None:
    offenders = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for module in imported_modules(path)
        if module == "bot" or module.startswith("bot.")
    }
    assert not offenders, sorted(offenders)


def test_the_engine_and_the_adapters_do_not_import_each_other() -> None:
    for package, other in (("engine", "adapters"), ("adapters", "engine")):
        for path in (ROOT / package).rglob("*.py"):
            modules = imported_modules(path)
            assert not {m for m in modules if m == other or m.startswith(other + ".")}, path


def test_architecture_names_every_module_and_only_modules_that_exist() -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:bot|engine|adapters)/[\w/]+\.py)`", text))
    modules = {
        str(path.relative_to(ROOT))
        for package in ("bot", "engine", "adapters")
        for path in (ROOT / package).rglob("*.py")
        if path.name != "__init__.py"
    }
    assert sorted(modules - named) == [], "modules ARCHITECTURE.md does not describe"
    assert sorted(named - modules) == [], "ARCHITECTURE.md names modules that do not exist"
