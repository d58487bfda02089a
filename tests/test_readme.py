"""The README's promises: its generated tables are current and its commands are the real ones."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_sections_are_current():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "update_readme.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    text = (ROOT / "README.md").read_text()
    blocks = [b.split("\n", 1)[1].strip() for b in text.split("```")[1::2] if b.startswith("bash")]
    assert blocks[0] == "bash scripts/setup.sh && .venv/bin/classicnets train lenet5"
    assert blocks[1] == "bash scripts/setup.sh && .venv/bin/python -m pytest -q"
    assert blocks[1] in (ROOT / ".ci" / "run").read_text()
