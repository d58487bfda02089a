"""What every benchmark script does at the end: write its results as JSON and markdown."""

from __future__ import annotations

import json
from pathlib import Path


def write_results(out: Path, stem: str, results: dict, markdown: str, quiet: bool = False) -> None:
    """``out/STEM.json`` and ``out/STEM.md``; the markdown is printed unless ``quiet``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown)
    if not quiet:
        print(markdown)


def serve_worker(argv: list[str], worker) -> bool:
    """``SCRIPT worker JSON``: run ``worker`` on the decoded JSON and print its result as JSON (the
    last stdout line, which the parent reads); False when ``argv`` is not a worker call."""
    if not argv or argv[0] != "worker":
        return False
    print(json.dumps(worker(json.loads(argv[1]))))
    return True
