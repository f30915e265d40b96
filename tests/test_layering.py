"""Dependencies point one way: markets <- signals <- learning, signals <- sizing; no domain imports FastAPI."""

import ast
from pathlib import Path

import pytest

DOMAINS = Path(__file__).resolve().parents[1] / "app" / "domains"
# package -> packages it must never import (directly; with the rule on every package, not transitively either)
FORBIDDEN = {
    "markets": ("signals", "learning", "sizing"),
    "signals": ("learning", "sizing"),
    "sizing": ("learning",),
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def _files(package: str) -> list[Path]:
    return sorted((DOMAINS / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_never_imports_one_that_builds_on_it(package: str) -> None:
    offenders = [
        f"{path.relative_to(DOMAINS)} imports {module}"
        for path in _files(package)
        for module in imported_modules(path)
        for banned in FORBIDDEN[package]
        if module == f"app.domains.{banned}" or module.startswith(f"app.domains.{banned}.")
    ]
    assert not offenders, offenders


def test_no_domain_imports_the_web_framework() -> None:
    offenders = [
        str(path.relative_to(DOMAINS))
        for path in DOMAINS.rglob("*.py")
        if any(m == "fastapi" or m.startswith(("fastapi.", "starlette")) for m in imported_modules(path))
    ]
    assert not offenders, offenders


def test_the_rule_sees_an_offending_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from app.domains.learning.backtest import TradeRule\nimport fastapi\n")
    assert {"app.domains.learning.backtest", "fastapi"} <= imported_modules(bad)
