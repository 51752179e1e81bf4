"""The learning core is pure PyTorch: it never imports the web layer."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

WEB = {"fastapi", "starlette", "pydantic", "pydantic_settings", "uvicorn", "httpx"}
CORE = Path(__file__).parents[2] / "models"


def test_no_module_of_the_core_imports_the_web_layer():
    for path in CORE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            assert not {n.split(".")[0] for n in names} & WEB, f"{path.name} imports {names}"
            assert not any(n.startswith("tbptt.service") for n in names), f"{path.name} imports {names}"


def test_importing_the_core_loads_no_web_module():
    code = "import sys, tbptt.models; print(sorted(sys.modules))"
    loaded = eval(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert not {m.split(".")[0] for m in loaded} & WEB
    assert not [m for m in loaded if m.startswith("tbptt.service")]


def test_the_project_installs_under_its_own_name_only(tmp_path):
    """Outside the checkout only tbptt.* is importable: a user's own models.py or service package never
    collides with ours."""
    code = "import tbptt.models, tbptt.service.app, importlib.util as u; print(u.find_spec('models'), u.find_spec('service'))"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert shown.stdout.split() == ["None", "None"]
