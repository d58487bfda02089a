"""What every benchmark script does at the end: write its results as JSON and markdown."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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


def call_worker(script: Path, args: list[str], env: dict | None = None, what: str | None = None) -> dict:
    """Run ``SCRIPT worker ARGS...`` in its own process (from the repository root) and return the JSON
    it printed last (see ``serve_worker``); a failure raises with its stderr, named by ``what``."""
    proc = subprocess.run([sys.executable, str(script), "worker", *args], capture_output=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{what or 'worker ' + ' '.join(args)} failed ({proc.returncode}):\n"
                           f"{proc.stderr.decode()[-3000:]}")
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])
