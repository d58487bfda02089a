"""classicnets explore: every JSON endpoint, the safety rules over plain HTTP, and the page end to end
in a real browser (Debian's chromium driven by Playwright; skipped, with the reason, without them).

One server serves the whole module (lenet5-digits and the other shipped weights), and one browser.
``CLASSICNETS_SCREENSHOTS=1`` also writes the README's screenshots (docs/figures/explore-*.png).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from classicnets.costs import format_cost_table, stack_cost
from classicnets.errors import ClassicNetsError
from classicnets.explore import serve
from classicnets.explore.models import Models
from classicnets.explore.server import ExplorerServer
from classicnets.explore.upload import MAX_BYTES
from classicnets.weights import weights_file
from explore_helpers import (
    call,
    draw_strokes,
    encode,
    get_json,
    launch,
    png_header_only,
    post_json,
    raw,
    refusal,
    running_server,
)
from paper_digits import STROKES, canvas_digit, embedded_test_digits

# One worker runs the whole module (pytest-xdist's loadgroup): one server, one browser.
pytestmark = pytest.mark.xdist_group("explore")
ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "figures"


@pytest.fixture(scope="module")
def server():
    with running_server() as s:
        yield s


# ---- the JSON endpoints ----------------------------------------------------------------------

def test_models_lists_the_shipped_weights_the_zoo_and_the_residual_pair(server):
    models = get_json(server, "/api/models")
    assert models["default"] == "lenet5-digits"
    names = [m["name"] for m in models["models"]]
    assert {"lenet5-digits", "lenet5_1998-digits", "lenet5-fashion"} <= set(names)
    assert "path" not in json.dumps(models["models"])  # the page knows models by name only
    assert {"vgg16", "resnet20", "lenet5_1998"} <= set(models["zoo"])
    assert [n["model"] for n in models["residual"]] == ["resnet20", "plain20"]
    for net in models["residual"]:
        assert net["note"].startswith("trained" if net["source"] == "weights" else "untrained")


def test_predict_reads_a_drawn_seven_and_shows_every_layer(server):
    result = post_json(server, "/api/predict?model=lenet5-digits&seq=4", encode(canvas_digit(7)))
    assert result["seq"] == "4" and result["model"] == "lenet5-digits"
    assert result["top"][0]["class"] == "7" and result["top"][0]["probability"] > 0.9
    assert len(result["top"]) == 10
    assert (result["input"]["height"], result["input"]["width"]) == (28, 28)
    layers = [(layer["name"], layer["kind"], layer["shape"]) for layer in result["layers"]]
    assert layers == [("features.conv1", "maps", [6, 28, 28]), ("features.pool1", "maps", [6, 14, 14]),
                      ("features.conv2", "maps", [16, 10, 10]), ("features.pool2", "maps", [16, 5, 5]),
                      ("features.fc1", "bars", [120]), ("features.fc2", "bars", [84]), ("fc3", "bars", [10])]
    conv2 = result["layers"][2]
    assert conv2["count"] == 16 and len(conv2["data"]) == 4 * -(-16 * 10 * 10 // 3)  # every map, base64
    assert result["layers"][1]["types"] == ["MaxPool2d", "ReLU"]  # a layer is shown after its activation
    assert result["rbf"] is None


def test_predict_lenet5_1998_shows_the_rbf_distances_and_prototypes(server):
    result = post_json(server, "/api/predict?model=lenet5_1998-digits", encode(canvas_digit(3)))
    rbf = result["rbf"]
    nearest = min(range(10), key=rbf["distances"].__getitem__)
    assert str(nearest) == result["top"][0]["class"] == "3"
    assert len(rbf["prototypes"]) == 10 and all(len(p) == 84 and set(p) <= {-1, 1} for p in rbf["prototypes"])
    assert len(rbf["f6"]) == 84 and (rbf["height"], rbf["width"]) == (12, 7)


def test_residual_shows_every_block_of_both_nets(server):
    for body in (b"", encode(canvas_digit(1))):  # no input: the first embedded test digit
        nets = post_json(server, "/api/residual?seq=2", body)["nets"]
        assert [n["model"] for n in nets] == ["resnet20", "plain20"]
        for net in nets:
            assert [b["name"] for b in net["blocks"]] == [f"layer{s}.{i}" for s in (1, 2, 3) for i in range(3)]
            assert all(b["ratio"] > 0 and b["x"]["count"] == b["f"]["count"] == 4 for b in net["blocks"])
        resnet, plain = nets
        assert [b["shortcut"] for b in resnet["blocks"]][2:4] == ["identity", "padded"]
        assert not any(b["residual"] for b in plain["blocks"])
        assert resnet["blocks"][3]["out_shape"] == [32, 16, 16]


def test_summary_is_classicnets_summary_with_the_card(server):
    s = get_json(server, "/api/summary?model=vgg16")
    assert s["input_size"] == [3, 224, 224] and s["num_classes"] == 1000
    assert ["Total params", "138,357,544"] in s["totals"] and s["card"]["paper"].startswith("Simonyan")
    assert s["header"][3] == "Params" and s["rows"][0] == ["features.0", "Conv2d", "224 x 224 x 64", "1,792",
                                                           "86,704,128"]
    small = get_json(server, "/api/summary?model=resnet20&c=1&h=28&w=28&classes=7")
    assert ["Input size (H x W x C)", "28 x 28 x 1"] in small["totals"] and small["rows"][-1][2] == "7"
    trained = get_json(server, "/api/summary?model=lenet5_1998-digits")  # trained weights: their model
    assert trained["model"] == "lenet5_1998" and ["Total params", "60,000"] in trained["totals"]


@pytest.mark.parametrize("query, words", [
    ("model=vgg16&h=100000&w=100000", "at most 65,536 pixels a side"),
    ("model=lenet5&h=64&w=64", "lenet5 takes 32x32 images"),
    ("model=vgg16&h=16&w=16", "the smallest input vgg16 takes is 3 x 32 x 32"),
    ("model=vgg16&classes=1000000", "classes '1000000'"),
    ("model=vgg16&c=abc", "input channels 'abc'"),
    ("model=no_such_net", "unknown model 'no_such_net'"),
])
def test_summary_refuses_sizes_a_model_cannot_take(server, query, words):
    status, message = refusal(server, "GET", f"/api/summary?{query}")
    assert status in (400, 404) and words in message


def test_drawing_is_the_svg_of_classicnets_draw(server):
    status, headers, body = call(server, "GET", "/api/drawing?model=lenet5")
    assert status == 200 and headers["content-type"] == "image/svg+xml"
    svg = body.decode()
    assert "<svg" in svg and "28 x 28 x 6" in svg
    assert not re.search(r"(href|src)=\"https?:", svg)  # nothing fetched from elsewhere


def test_cost_is_classicnets_cost(server):
    direct = get_json(server, "/api/cost?input=28x28x192&layers=32x5")
    bottleneck = get_json(server, "/api/cost?input=28x28x192&layers=16x1,32x5")
    assert (direct["total"], bottleneck["total"]) == (120_422_400, 12_443_648)
    expected = format_cost_table(stack_cost((28, 28, 192), [(16, 1), (32, 5)]), in_shape=(28, 28, 192))
    assert bottleneck["table"] == expected
    assert "(12.4 M multiply-adds)" in bottleneck["table"]
    for query in ("input=28x28&layers=32x5", "layers=32y5", "input=28x28x192&layers=" + "1x1," * 40):
        assert refusal(server, "GET", f"/api/cost?{query}")[0] == 400


# ---- safe by default -------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["evil.example:{port}", "evil.example", "127.0.0.1:1",
                                  "localhost.evil.example:{port}"])
def test_a_foreign_host_header_is_refused(server, host):
    status, message = refusal(server, "GET", "/api/models", host=host.format(port=server.port))
    assert status == 403 and "DNS rebinding" in message


def test_the_servers_own_names_are_answered_without_cors_headers(server):
    for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}"):
        status, headers, _ = call(server, "GET", "/api/models", host=host, headers={"Origin": "http://evil.example"})
        assert status == 200 and not any(k.startswith("access-control-") for k in headers)
    answer = raw(server, b"GET /api/models HTTP/1.0\r\n\r\n")  # no Host header at all
    assert answer.startswith(b"HTTP/1.0 403") or answer.startswith(b"HTTP/1.1 403")


def test_every_server_is_the_only_judge_of_its_own_address():
    # Bound to every interface, an IP address with the port is the server's own (a rebinding
    # attack sends a name); a name it does not have is still refused.
    s = ExplorerServer.__new__(ExplorerServer)
    s.port, s.hosts, s.wildcard = 8000, {"127.0.0.1", "localhost", "[::1]", "0.0.0.0"}, True
    assert s.host_is_mine("192.168.1.20:8000") and s.host_is_mine("[fe80::1]:8000")
    assert not s.host_is_mine("evil.example:8000") and not s.host_is_mine("192.168.1.20:8001")


def test_an_oversize_upload_is_refused_before_it_is_read(server):
    header = (f"POST /api/predict?model=lenet5-digits HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
              f"Content-Length: {MAX_BYTES + 1}\r\n\r\n").encode()
    answer = raw(server, header + b"x" * 1000)
    assert answer.startswith(b"HTTP/1.1 413") and b"at most 10,000,000 bytes" in answer


@pytest.mark.parametrize("width, height, words", [
    (4001, 10, "4,001 x 10 pixels is too large"),
    (5000, 5000, "at most 4,000 x 4,000 pixels"),
    (10_000, 10_000, "decompression bomb"),  # Pillow's warning, made an error
    (20_000, 20_000, "decompression bomb"),  # Pillow's DecompressionBombError
])
def test_huge_images_and_decompression_bombs_get_413(server, width, height, words):
    status, message = refusal(server, "POST", "/api/predict?model=lenet5-digits&name=bomb.png",
                              png_header_only(width, height))
    assert status == 413 and words in message and "bomb.png" in message


@pytest.mark.parametrize("body, status, words", [
    (b"this is not an image", 400, "not an image that can be read"),
    (encode(canvas_digit(7))[:200], 400, "not an image that can be read"),  # truncated
    (b"", 400, "carried no image"),
    (encode(Image.new("LAB", (28, 28)), "TIFF"), 422, "unsupported colour mode LAB"),  # decoded, no picture
])
def test_inputs_that_cannot_be_read_are_refused_with_a_reason(server, body, status, words):
    got, message = refusal(server, "POST", "/api/predict?model=lenet5-digits", body)
    assert got == status and words in message


def test_a_blank_canvas_is_no_error_but_nothing_to_answer(server):
    result = post_json(server, "/api/predict?model=lenet5-digits&seq=9", encode(Image.new("L", (280, 280), 255)))
    assert result["seq"] == "9" and "no ink found" in result["blank"] and "top" not in result


def test_unknown_models_and_paths_are_404(server):
    status, message = refusal(server, "POST", "/api/predict?model=/etc/passwd", encode(canvas_digit(7)))
    assert status == 404 and "lenet5-digits" in message
    assert call(server, "GET", "/api/nothing")[0] == 404


@pytest.mark.parametrize("path", ["/../pyproject.toml", "/%2e%2e/%2e%2e/pyproject.toml", "/..%2f..%2fpyproject.toml",
                                  "/static/../server.py", "/server.py", "/__init__.py", "/..%5c..%5cserver.py",
                                  "//etc/passwd", "/%2fetc%2fpasswd", "/static/index.html/.."])
def test_static_files_come_only_from_the_package_folder(server, path):
    answer = raw(server, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nConnection: close\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 404") and b"import" not in answer and b"root:" not in answer


def test_the_page_and_its_files_are_served_with_a_strict_policy(server):
    status, headers, body = call(server, "GET", "/")
    assert status == 200 and b'data-testid="draw"' in body
    assert "default-src 'none'" in headers["content-security-policy"]
    for name in re.findall(rb'(?:src|href)="/([a-z]+\.(?:js|css))"', body) + [b"ui.js", b"draw.js", b"views.js"]:
        assert call(server, "GET", "/" + name.decode())[0] == 200
    assert not re.search(rb"https?://", body)


def test_garbage_and_broken_requests_do_not_stop_the_server(server):
    raw(server, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n")  # a TLS hello
    raw(server, b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n")  # a request line too long
    post = f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
    raw(server, f"{post}Content-Length: abc\r\n\r\n".encode())
    raw(server, f"{post}Content-Length: 100\r\n\r\nshort".encode())  # the client stops sending
    assert get_json(server, "/api/models")["default"] == "lenet5-digits"


def test_concurrent_requests_get_their_own_answers(server):
    inputs = {d: encode(canvas_digit(d)) for d in (1, 3, 7)}
    jobs = [(model, d) for model in ("lenet5-digits", "lenet5_1998-digits") for d in inputs] * 2

    def ask(job):
        model, d = job
        return model, d, post_json(server, f"/api/predict?model={model}", inputs[d])["top"][0]["class"]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, jobs))
        summaries = list(pool.map(lambda _: get_json(server, "/api/summary?model=resnet20")["total_params"], range(4)))
    assert all(str(d) == got for _, d, got in answers)
    assert set(summaries) == {269_722}


def test_shipped_resnet20_fashion_weights_are_the_residual_views_resnet(tmp_path, monkeypatch):
    import classicnets.weights
    from classicnets.checkpoint import FORMAT, save_tensors
    from classicnets.explore.models import untrained_meta
    from classicnets.models import create_model

    # A weights folder with a ResNet-20 for Fashion-MNIST in it, as the shipped one will be.
    shutil.copy(weights_file("lenet5-digits"), tmp_path / "lenet5-digits.safetensors")
    meta = {**untrained_meta("resnet20"), "format": FORMAT}
    save_tensors(tmp_path / "resnet20-fashion.safetensors", create_model("resnet20", in_channels=1).state_dict(), meta)
    for name in ("lenet5-digits", "resnet20-fashion"):
        (tmp_path / f"{name}.json").write_text('{"test_accuracy": 0.9}')
    monkeypatch.setattr(classicnets.weights, "FOLDER", tmp_path)
    models = Models()
    resnet, plain = models.residual.values()
    assert resnet is models.get("resnet20-fashion") and resnet.note.startswith("trained")
    assert plain.source == "untrained" and plain.describe()["input_size"] == resnet.describe()["input_size"]


# ---- the command ------------------------------------------------------------------------------

@pytest.fixture
def no_serving(monkeypatch):
    """``serve`` returns as if Ctrl-C were pressed the moment it starts serving; no browser opens."""
    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ExplorerServer, "serve_forever", interrupted)
    monkeypatch.setattr("webbrowser.open", lambda url: pytest.fail(f"opened a browser at {url}"))


def test_the_command_prints_the_address_on_a_line_of_its_own(cli, no_serving):
    code, out, err = cli("explore", "--port", "0", "--no-browser")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", out.splitlines()[0]), out
    assert code == 130 and err == "interrupted\n"  # Ctrl-C, as every command reports it


def test_a_port_in_use_is_named(cli, no_serving):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, _, err = cli("explore", "--port", taken.getsockname()[1], "--no-browser")
    assert code == 2 and "is in use: --port 0 picks a free one" in err


def test_another_host_is_warned_about(capsys, no_serving):
    with pytest.raises(KeyboardInterrupt):
        serve(None, host="0.0.0.0", port=0, open_browser=False)
    out, err = capsys.readouterr()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\n", out) and "other machines can reach the page" in err


def test_a_checkpoint_from_the_command_line_is_offered_by_its_name(tmp_path, cli, no_serving):
    run = tmp_path / "my-run"
    run.mkdir()
    shutil.copy(weights_file("lenet5-digits"), run / "model.safetensors")
    models = Models(run)
    assert models.default == "my-run" and models.get("my-run").source == "checkpoint"
    assert Models("lenet5_1998-digits").default == "lenet5_1998-digits"
    for wrong, words in ((tmp_path / "nothing", "no checkpoint there"), ("lenet6-digits", "neither")):
        with pytest.raises(ClassicNetsError, match=words):
            Models(wrong)
    code, _, err = cli("explore", tmp_path / "nothing", "--port", "0", "--no-browser")
    assert code == 2 and "no checkpoint there" in err


# ---- in a browser ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
    from explore_helpers import chromium

    if chromium() is None:
        pytest.skip("no chromium installed (Debian: apt-get install chromium)")
    playwright_api.expect.set_options(timeout=15_000)  # a shared, busy machine answers slowly
    with playwright_api.sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    """A page on the explorer that collects console errors and every request's address; a test
    ends by checking that there were none, and none to any other host."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    p = context.new_page()
    p.errors, p.urls = [], []
    p.on("console", lambda m: p.errors.append(m.text) if m.type == "error" else None)
    p.on("pageerror", lambda e: p.errors.append(str(e)))
    p.on("request", lambda r: p.urls.append(r.url))
    p.goto(f"http://127.0.0.1:{server.port}/")
    p.wait_for_selector("body[data-ready=true]")
    yield p
    context.close()


def clean(page, server, refused: int | None = None) -> None:
    """No console errors but the browser's own report of a request refused with status ``refused``
    ("Failed to load resource: ... 413"), and no request to another host."""
    assert [e for e in page.errors if not (refused and f"status of {refused}" in e)] == []
    mine = (f"http://127.0.0.1:{server.port}/", f"blob:http://127.0.0.1:{server.port}/")
    assert [u for u in page.urls if not u.startswith(mine)] == []


def screenshot(locator, name: str) -> None:
    if os.environ.get("CLASSICNETS_SCREENSHOTS") == "1":
        locator.screenshot(path=str(FIGURES / f"explore-{name}.png"))


def test_browser_strokes_on_the_canvas_are_predicted(page, server):
    from playwright.sync_api import expect

    draw_strokes(page, STROKES[7])
    prediction = page.get_by_test_id("prediction")
    expect(prediction).to_have_text(re.compile(r"^7 \d+\.\d%$"))
    expect(prediction).to_have_attribute("data-for", "canvas")
    expect(page.get_by_test_id("layer")).to_have_count(7)
    expect(page.get_by_test_id("probabilities").locator(".probability")).to_have_count(10)
    screenshot(page.locator("main"), "draw")
    page.get_by_test_id("model-select").select_option("lenet5_1998-digits")  # the drawing is asked again
    expect(page.locator("#rbf figure")).to_have_count(11)
    expect(prediction).to_have_text(re.compile(r"^7 "))
    page.get_by_test_id("clear").click()
    expect(prediction).not_to_have_attribute("data-for", "canvas")
    clean(page, server)


def test_browser_an_uploaded_file_is_predicted(page, server, tmp_path):
    from playwright.sync_api import expect

    images, labels = embedded_test_digits()
    i = int((labels == 3).nonzero()[0][0])
    path = tmp_path / "a three.png"
    Image.fromarray(images[i]).resize((112, 112), Image.NEAREST).save(path)
    page.get_by_test_id("upload").set_input_files(str(path))
    prediction = page.get_by_test_id("prediction")
    expect(prediction).to_have_attribute("data-for", "a three.png")
    expect(prediction).to_have_text(re.compile(r"^3 "))
    clean(page, server)


def test_browser_switching_models_updates_the_summary(page, server):
    from playwright.sync_api import expect

    page.get_by_test_id("model-select").select_option("vgg16")
    expect(page.locator("#view-architectures")).to_be_visible()
    expect(page.get_by_test_id("summary")).to_contain_text("138,357,544")
    page.get_by_test_id("model-select").select_option("resnet20")
    expect(page.get_by_test_id("summary")).to_contain_text("269,722")
    expect(page.locator("#drawing")).to_have_attribute("src", re.compile("^blob:"), timeout=30_000)
    screenshot(page.locator("main"), "architectures")
    clean(page, server)
    page.locator("#arch-form input[name=h]").fill("100000")
    expect(page.locator("#arch-error")).to_contain_text("65,536")
    clean(page, server, refused=400)


def test_browser_the_residual_and_cost_views_are_there(page, server):
    from playwright.sync_api import expect

    draw_strokes(page, STROKES[1])
    expect(page.get_by_test_id("prediction")).to_have_attribute("data-for", "canvas")
    page.locator("nav button[data-view=residual]").click()
    expect(page.locator("table.blocks tr")).to_have_count(10)  # a header and 9 blocks
    expect(page.locator("#residual-nets")).to_contain_text("your drawing")
    screenshot(page.locator("main"), "residual")
    page.locator("nav button[data-view=cost]").click()
    expect(page.locator("#cost-bars")).to_contain_text("120.4 M")
    expect(page.locator("#cost-bars")).to_contain_text("12.4 M")
    clean(page, server)


def test_browser_refusals_reach_the_page(page, server, tmp_path):
    from playwright.sync_api import expect

    foreign = page.request.get(f"http://127.0.0.1:{server.port}/api/models", headers={"Host": "evil.example"})
    assert foreign.status == 403
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"\0" * MAX_BYTES)
    page.get_by_test_id("upload").set_input_files(str(big))
    expect(page.locator("#draw-error")).to_contain_text("at most 10,000,000 bytes")
    expect(page.get_by_test_id("prediction")).not_to_have_attribute("data-for", "big.png")
    clean(page, server, refused=413)
