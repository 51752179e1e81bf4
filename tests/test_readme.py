"""The README's Python example of the learning core runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def test_library_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    (example,) = [b for b in blocks if "from tbptt.models import" in b]
    exec(compile(example, "README.md", "exec"), {})


def test_quick_start_has_exactly_two_commands_and_ci_runs_the_second():
    quick = README.read_text().split("## Quick start", 1)[1].split("##", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", quick, flags=re.S)
    commands = [line.split("  #")[0].strip() for line in block.strip().splitlines()]
    assert len(commands) == 2 and commands[0].endswith("tbptt serve")
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[1] in ci


def test_every_setting_is_in_the_readme_table():
    from tbptt.service.settings import Settings

    text = README.read_text()
    for name in Settings.model_fields:
        assert f"| `TBPTT_{name.upper()}` |" in text, name
