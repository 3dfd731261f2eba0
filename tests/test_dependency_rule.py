"""The dependency rule (pyproject.toml, [tool.importlinter]): triggers may import
workflows, workflows never imports triggers, the engine knows only its steps. The
contracts are checked on this tree, and shown to fail on a copy of it that breaks
the rule."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT), "--no-cache"],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def tree_copy(tmp_path) -> Path:
    """Our three packages and the contracts, copied away from the installed ones."""
    for package in ("iolinker", "triggers", "workflows"):
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_the_dependency_rule(tree_copy):
    result = lint_imports(tree_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" in result.stdout and " 0 broken" in result.stdout


@pytest.mark.parametrize(
    "module, source, contract",
    [
        ("workflows/probe.py", "import triggers\n", "workflows never imports triggers"),
        (
            "workflows/services_probe.py",
            "from triggers.callbacks import callbacks_schedule  # noqa: F401\n",
            "workflows never imports triggers",
        ),
        (
            "workflows/steps/probe.py",
            "from workflows import services  # noqa: F401\n",
            "the engine imports only its steps",
        ),
    ],
)
def test_an_import_that_breaks_the_rule_fails_the_check(tree_copy, module, source, contract):
    (tree_copy / module).write_text(source)
    result = lint_imports(tree_copy)
    assert result.returncode != 0
    assert f"{contract}" in result.stdout and "BROKEN" in result.stdout
