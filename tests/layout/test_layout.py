"""The layout as the README maps it, and the layering check that `make lint` runs."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "src" / "crimes"
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def _mapped_paths() -> set[str]:
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {path for row in rows for path in re.findall(r"`([^`]+)`", row.split("|")[1])}


def test_the_readme_maps_every_part_of_the_package_and_nothing_else() -> None:
    mapped = {p for p in _mapped_paths() if p.startswith("src/crimes/")}
    parts = {
        f"src/crimes/{child.name}" + ("/" if child.is_dir() else "")
        for child in PACKAGE.iterdir()
        if child.name != "__init__.py" and not child.name.startswith((".", "__pycache__"))
    }
    assert mapped == parts


def test_every_test_folder_is_a_part_of_the_package_or_says_why_not() -> None:
    shared = {"support", "deploy", "layout", "security"}
    folders = {
        child.name
        for child in (PROJECT_ROOT / "tests").iterdir()
        if child.is_dir() and child.name != "__pycache__"
    }
    # A part is a package or a top-level module (tests/contract/ for contract.py).
    parts = {child.stem for child in PACKAGE.iterdir() if child.name != "__init__.py"}
    assert folders - shared <= parts, folders - shared - parts
    for name in shared - {"layout"}:
        assert f"tests/{name}/" in _mapped_paths(), name


def test_the_layering_check_fails_when_a_production_part_imports_local_tooling(
    tmp_path: Path,
) -> None:
    # The same contracts, on a copy of the package with one forbidden import added.
    copy = tmp_path / "src"
    shutil.copytree(PACKAGE, copy / "crimes", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    env = {"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"}

    def lint() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [LINT_IMPORTS], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
        )

    kept = lint()
    assert kept.returncode == 0, kept.stdout[-2000:]
    gateway_app = copy / "crimes" / "gateway" / "app.py"
    gateway_app.write_text(gateway_app.read_text() + "\nfrom crimes.local import demo  # noqa\n")
    broken = lint()
    assert broken.returncode != 0
    assert "imported by no production part BROKEN" in broken.stdout.replace("\n", " ")
    assert "crimes.gateway.app -> crimes.local.demo" in broken.stdout


def long_functions(folder: Path, limit: int) -> list[str]:
    """Every function or method under `folder` longer than `limit` lines (its def to its end)."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        functions = (
            node
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        )
        for node in functions:
            if (node.end_lineno or node.lineno) - node.lineno + 1 > limit:
                found.append(f"{path.relative_to(folder)}:{node.lineno} {node.name}")
    return found


def test_no_function_of_the_gateway_or_the_model_services_is_longer_than_50_lines(
    tmp_path: Path,
) -> None:
    package = PROJECT_ROOT / "src" / "crimes"
    assert long_functions(package / "gateway", 50) == []
    assert long_functions(package / "serving", 50) == []
    # The check sees a long one.
    (tmp_path / "long.py").write_text("def f() -> None:\n" + "    pass\n" * 50)
    assert long_functions(tmp_path, 50) == ["long.py:1 f"]
