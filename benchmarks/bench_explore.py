"""How fast does `classicnets explore` answer? The page's first load, and a drawing's answer.

What is timed is the command people run, ``classicnets explore --port 0 --no-browser``, in its own
process, as it runs:

- **first page load**: from the moment the address is printed to the page's ``load`` event in
  Chromium (and to the page being ready: its model menu filled from ``/api/models``); without a
  browser, to the last byte of a plain HTTP fetch of the page, its scripts, its style and
  ``/api/models``. The browser, and the tab, are opened before the server starts, so their own
  start is not counted.
- **predict + maps, server side**: ``POST /api/predict`` of a digit drawn on a 280 x 280 canvas
  (``tests/paper_digits.py``), from a client on the same machine: decoding, the reading,
  the forward pass with every layer kept, and the JSON. For lenet5-digits and for a ResNet-20
  (the shipped ``resnet20-fashion`` weights where installed; otherwise an untrained ResNet-20
  saved as a run directory and given on the command line: the same work). Interleaved, medians.
- **drawing to maps shown**, in Chromium (where installed): a 7 drawn with the mouse, from the
  pen's last move to the frame that paints the answer's maps (the page's own clock,
  ``window.exploreTimings``), for both models.

GOALS (on 2 cores): drawing to maps shown at most 50 ms for LeNet-5 and 200 ms for ResNet-20;
first page load at most 1 s after the address is printed.

Run: ``.venv/bin/python benchmarks/bench_explore.py`` (about a minute; ``--quick``: seconds).
Results: ``benchmarks/results/<machine>/explore.{json,md}``.
"""

from __future__ import annotations

import http.client
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

from common import ROOT, script_parser, write_results  # benchmarks/common.py
from PIL import Image

sys.path.insert(0, str(ROOT / "tests"))
from explore_helpers import draw_strokes, launch  # noqa: E402
from paper_digits import STROKES, canvas_digit  # noqa: E402

GOALS_MS = {"lenet5-digits": 50.0, "resnet20": 200.0, "first_load": 1000.0}
STATIC = ["/", "/app.js", "/ui.js", "/draw.js", "/views.js", "/residual.js", "/style.css", "/api/models"]


def resnet_checkpoint(tmp: Path) -> tuple[str | None, str]:
    """(the checkpoint to give the command, the name the page knows the ResNet-20 by)."""
    import torch

    from classicnets import create_model
    from classicnets.checkpoint import FORMAT, MODEL_FILE, save_tensors
    from classicnets.explore.models import untrained_meta
    from classicnets.weights import list_weights

    if "resnet20-fashion" in list_weights():
        return None, "resnet20-fashion"
    torch.manual_seed(0)
    run = tmp / "resnet20-untrained"
    run.mkdir()
    meta = {**untrained_meta("resnet20"), "format": FORMAT}
    save_tensors(run / MODEL_FILE, create_model("resnet20", num_classes=10, in_channels=1).state_dict(), meta)
    return str(run), run.name


@contextmanager
def explorer(checkpoint: str | None):
    """``classicnets explore`` in its own process: yields (its address, when the address was printed)."""
    command = [sys.executable, "-m", "classicnets", "explore", *([checkpoint] if checkpoint else []),
               "--port", "0", "--no-browser"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        url = proc.stdout.readline().strip()
        printed = time.perf_counter()
        if not url.startswith("http://"):
            raise RuntimeError(f"classicnets explore printed {url!r}, not its address")
        yield url, printed
    finally:
        proc.terminate()
        proc.wait(30)


def fetch_all(url: str) -> None:
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    for path in STATIC:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        assert response.status == 200, (path, response.status)
    conn.close()


def first_load(checkpoint: str | None, browser) -> dict:
    """Milliseconds from the printed address to the page loaded (and ready), or fetched. The tab is
    opened before the server starts: a browser's own start, and a new tab's, are not the server's."""
    page = browser.new_page() if browser is not None else None
    with explorer(checkpoint) as (url, printed):
        if page is None:
            fetch_all(url)
            return {"fetched_ms": 1000 * (time.perf_counter() - printed)}
        page.goto(url, wait_until="load")
        loaded = time.perf_counter()
        page.wait_for_selector("body[data-ready=true]")
        ready = time.perf_counter()
        page.close()
        return {"load_event_ms": 1000 * (loaded - printed), "ready_ms": 1000 * (ready - printed)}


def predict_latency(url: str, models: list[str], n: int) -> dict:
    """Round trips of POST /api/predict, the models interleaved: all of them in ms, per model."""
    body = io.BytesIO()  # a 7 drawn on the 280-px canvas, sent as the page sends it: 112 px, a grey PGM
    canvas_digit(7).resize((112, 112), Image.BOX).save(body, format="PPM")
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    times: dict[str, dict[str, list[float]]] = {m: {"round_trip": [], "server": [], "server_cpu": []} for m in models}
    for i in range(n + 3):  # three rounds of warm-up, not counted
        for model in models:
            start = time.perf_counter()
            conn.request("POST", f"/api/predict?model={model}", body.getvalue())
            response = conn.getresponse()
            answer = json.loads(response.read())
            assert response.status == 200 and "top" in answer, (response.status, answer)
            if i >= 3:
                times[model]["round_trip"].append(1000 * (time.perf_counter() - start))
                times[model]["server"].append(answer["server"]["ms"])
                times[model]["server_cpu"].append(answer["server"]["cpu_ms"])
    conn.close()
    return times


def drawing_to_maps(url: str, browser, models: list[str], drawings: int) -> dict:
    """Per model, ms from the pen's last move to the answer's maps painted, one per drawing."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]")
    out = {}
    for model in models:
        page.get_by_test_id("model-select").select_option(model)
        page.locator("nav button[data-view=draw]").click()
        out[model] = []
        for _ in range(drawings + 1):  # the first drawing warms up, not counted
            page.get_by_test_id("clear").click()
            draw_strokes(page, STROKES[7])
            expect(page.get_by_test_id("prediction")).to_have_attribute("data-for", "canvas")
            page.wait_for_timeout(400)  # the answer to the finished drawing, and no other after it
            out[model].append(page.evaluate("window.exploreTimings.at(-1)"))
        out[model] = out[model][1:]
    page.close()
    return out


def stats(values: list[float]) -> dict:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered), math.ceil(0.9 * len(ordered))) - 1]  # the largest of a few
    return {"median_ms": statistics.median(ordered), "p90_ms": p90,
            "n": len(ordered), "all_ms": [round(v, 2) for v in values]}


def run(args) -> dict:
    from classicnets.report import machine_info

    results = {"machine": machine_info(), "quick": args.quick}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        checkpoint, resnet = resnet_checkpoint(Path(tmp))
        browser = stack.enter_context(_browser()) if not args.no_browser else None
        results.update(browser=browser is not None, resnet=resnet, resnet_trained=checkpoint is None)
        results["first_load"] = [first_load(checkpoint, browser) for _ in range(args.starts)]
        models = ["lenet5-digits", resnet]
        with explorer(checkpoint) as (url, _):
            results["predict"] = {m: {k: stats(v) for k, v in t.items()}
                                  for m, t in predict_latency(url, models, args.n).items()}
            if browser is not None:
                drawn = drawing_to_maps(url, browser, models, args.drawings)
                results["drawing"] = {m: {"since_pen_ms": stats([t["sinceInputMs"] for t in ts]),
                                          "request_ms": stats([t["requestMs"] for t in ts]),
                                          "server_ms": stats([t["serverMs"] for t in ts])} for m, ts in drawn.items()}
    results["load_average_at_end"] = list(os.getloadavg())
    return results


@contextmanager
def _browser():
    """Chromium through Playwright (as tests/test_explore.py launches it), or None without them."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        yield None
        return
    with sync_playwright() as p:
        try:
            b = launch(p)
        except Exception:  # no chromium on this machine: the HTTP measurements only
            yield None
            return
        yield b
        b.close()


def to_markdown(r: dict) -> str:
    m = r["machine"]
    load = m.get("load_average_at_start") or [0]
    lines = ["# classicnets explore: first load and answers", "",
             f"`benchmarks/bench_explore.py` on {m['cpu']} ({m['cores_available']} cores), torch {m['torch']}; "
             f"load average {load[0]:.2f} at the start and {r['load_average_at_end'][0]:.2f} at the end"
             + (" (other jobs on the cores)" if max(load[0], r["load_average_at_end"][0]) > 1 else "") + ". "
             f"ResNet-20: `{r['resnet']}` ({'trained' if r['resnet_trained'] else 'untrained: the same work'}).", "",
             "| what | model | median | p90 | goal |", "|---|---|---:|---:|---:|"]
    rows = [("POST /api/predict, round trip", "predict", "round_trip"),
            ("of which the server's work (wall)", "predict", "server"),
            ("of which the server's work (CPU)", "predict", "server_cpu"),
            ("drawing to maps shown, Chromium: pen's last move to the frame painting them", "drawing", "since_pen_ms"),
            ("of which the request, sent to answer drawn", "drawing", "request_ms")]
    for what, part, key in rows:
        for model, measured in r.get(part, {}).items():
            s = measured[key]
            goal = f"{GOALS_MS['lenet5-digits' if model == 'lenet5-digits' else 'resnet20']:.0f} ms" \
                if key == "since_pen_ms" else ""
            lines.append(f"| {what} (n={s['n']}) | {model} | {s['median_ms']:.1f} ms | {s['p90_ms']:.1f} ms | {goal} |")
    key = "load_event_ms" if r["browser"] else "fetched_ms"
    loads = [f[key] for f in r["first_load"]]
    what = "page's load event" if r["browser"] else "page, scripts, style and /api/models fetched"
    lines.append(f"| first load: address printed to {what} (n={len(loads)}) | | "
                 f"{statistics.median(loads):.0f} ms | {max(loads):.0f} ms (most) | {GOALS_MS['first_load']:.0f} ms |")
    if r["browser"]:
        ready = [f["ready_ms"] for f in r["first_load"]]
        lines.append(f"| first load: to the page ready (menu filled) | | {statistics.median(ready):.0f} ms | "
                     f"{max(ready):.0f} ms (most) | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = script_parser(__doc__, "explore")
    ap.add_argument("--n", type=int, default=100, help="predictions timed per model (--quick: 10)")
    ap.add_argument("--drawings", type=int, default=10, help="drawings timed per model in Chromium (--quick: 2)")
    ap.add_argument("--starts", type=int, default=3, help="server starts, each a first page load (--quick: 1)")
    ap.add_argument("--no-browser", action="store_true", help="HTTP only, even where Chromium is installed")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.drawings, args.starts = 10, 2, 1
    results = run(args)
    write_results(args.out, "explore", results, to_markdown(results), quiet=args.quiet)


if __name__ == "__main__":
    main()
