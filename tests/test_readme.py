"""The README's promises: its generated tables are current, its commands are the real ones, and
its links, like those of docs/*.md, lead to files that exist."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# [text](target) and ![alt](target), with an optional "title" after the target.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.slow
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


def relative_links(text: str) -> list[str]:
    """The targets of the Markdown links in ``text`` that name a file: not in code, not http(s) or
    mailto, not a pure #anchor (an anchor after a path is dropped)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)  # fenced code
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code (a link's text may be code: its target stays)
    targets = []
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:", "#")):
            continue
        targets.append(target.split("#", 1)[0])
    return targets


def test_relative_links_lead_to_existing_files():
    broken = [f"{path.relative_to(ROOT)}: {target}"
              for path in markdown_files() for target in relative_links(path.read_text())
              if not (path.parent / target).exists()]
    assert not broken, "links to missing files:\n" + "\n".join(broken)


def test_relative_links_finds_links_and_skips_the_rest():
    text = ("[a](docs/a.md) ![b](figures/b.svg \"B\") [`c`](../c.md#part) [d](https://x.org/d.md) "
            "[e](#anchor) `[f](f.md)`\n```text\n[g](g.md)\n```\n")
    assert relative_links(text) == ["docs/a.md", "figures/b.svg", "../c.md"]


def load_update_readme():
    spec = importlib.util.spec_from_file_location("update_readme", ROOT / "scripts" / "update_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_links_are_relative_to_the_file_they_are_written_into():
    update_readme = load_update_readme()
    assert update_readme.linker(ROOT / "README.md")("benchmarks/results.md") == "benchmarks/results.md"
    assert update_readme.linker(ROOT / "docs" / "performance.md")("benchmarks/results.md") == "../benchmarks/results.md"
    assert update_readme.linker(ROOT / "docs" / "experiments.md")("docs/experiments") == "experiments"


def test_render_fills_each_section_and_refuses_unknown_or_unclosed_ones():
    render = load_update_readme().render
    parts = {"a": lambda link: f"see [x]({link('docs/x.md')})"}
    text = "intro, naming `<!-- generated:a -->` in passing\n<!-- generated:a -->\nold\n<!-- /generated:a -->\n"
    new, found = render(text, parts, lambda path: f"../{path}", "docs/page.md")
    assert found == {"a"}
    assert new == ("intro, naming `<!-- generated:a -->` in passing\n<!-- generated:a -->\n"
                   "see [x](../docs/x.md)\n<!-- /generated:a -->\n")
    for bad in ("<!-- generated:b -->\n<!-- /generated:b -->\n", "<!-- generated:a -->\nno end\n"):
        try:
            render(bad, parts, str, "docs/page.md")
        except SystemExit as e:
            assert "docs/page.md" in str(e)
        else:
            raise AssertionError(f"rendered {bad!r}")
