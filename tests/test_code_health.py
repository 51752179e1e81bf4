"""The linters and the type checker, as part of the suite (so CI's one test command runs them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def run(*command: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_ruff_finds_nothing():
    run(sys.executable, "-m", "ruff", "check", "--no-cache", ".")


def test_the_code_is_formatted():
    run(sys.executable, "-m", "ruff", "format", "--check", "--no-cache", ".")


def test_mypy_finds_nothing(tmp_path):
    # The folders models/ and service/ install as tbptt.models and tbptt.service; mypy does not run the
    # editable install's import hook, so it reads them through a tree of links with their installed names.
    (tmp_path / "tbptt").mkdir()
    for name in ("models", "service"):
        (tmp_path / "tbptt" / name).symlink_to(ROOT / name, target_is_directory=True)
    env = {"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", "MYPYPATH": str(tmp_path)}
    cache = tmp_path / "mypy-cache"
    run(sys.executable, "-m", "mypy", "--cache-dir", str(cache), "--config-file", str(ROOT / "pyproject.toml"),
        "-p", "tbptt.models", "-p", "tbptt.service", cwd=tmp_path, env=env)  # fmt: skip
