"""draw(): every model in the zoo draws, its labels are the summary's shapes, repeated ResNet
blocks collapse to "x N", and shortcuts are drawn solid (identity) or dashed (shape-changing)."""

import importlib
import xml.etree.ElementTree as ET

import pytest
import torch

import classicnets
from classicnets.drawing import Layout, draw, layout, save
from classicnets.errors import ClassicNetsError
from classicnets.summary_table import model_summary


def drawn_texts(fig) -> set[str]:
    return {t.get_text() for ax in fig.axes for t in ax.texts}


def shortcut_lines(fig) -> dict[str, str]:
    """{block name: "identity" | "projection" | "padded"} of the shortcut arrows drawn."""
    out = {}
    for line in fig.axes[0].lines:
        gid = line.get_gid() or ""
        if gid.startswith("shortcut-"):
            _, kind, block = gid.split("-", 2)
            out[block] = (kind, line.get_linestyle())
    return out


def check_labels(lay: Layout, table, fig=None) -> None:
    """Every drawn item is the summary row of the same name: same shape, same label."""
    rows = {}
    for row in table.rows:
        rows.setdefault(row.name, row)
    texts = drawn_texts(fig) if fig is not None else None
    for item in lay.items[1:]:
        row = rows[item.name]
        assert item.shape == row.output_shape, item.name
        assert item.label == row.output, item.name
        if texts is not None:
            assert item.label in texts and item.op in texts


@pytest.mark.parametrize("name", classicnets.list_models())
def test_every_model_draws_with_the_summarys_shapes(name):
    lay = layout(name)  # built on the meta device (lenet5_1998 falls back to the CPU)
    fig = draw(lay)
    assert fig.get_figwidth() <= 11.0 + 0.8  # rows wrap: nothing runs off a page
    card = classicnets.model_card(name)
    assert lay.items[0].kind == "input" and lay.items[0].shape == card.input_size
    assert lay.table.input_size == card.input_size and lay.params == card.params
    check_labels(lay, lay.table, fig)
    assert {st.name for st in lay.stages} <= drawn_texts(fig)
    assert lay.items[-1].shape[0] == card.num_classes  # ends with the class-producing layer


@pytest.mark.parametrize("name", ["lenet5_1998", "alexnet_2012", "vgg16_bn", "nin", "resnet50", "resnet20"])
def test_labels_equal_an_independent_summary(name):
    check_labels(layout(name), model_summary(name, device="meta"))


def test_lenet5_layout_reads_like_the_lecture():
    lay = layout("lenet5")
    assert [(it.op, it.label) for it in lay.items] == [
        ("input", "32 x 32 x 1"),
        ("conv 5x5, s1", "28 x 28 x 6"), ("max pool 2x2, s2", "14 x 14 x 6"),
        ("conv 5x5, s1", "10 x 10 x 16"), ("max pool 2x2, s2", "5 x 5 x 16"),
        ("flatten", "400"), ("FC", "120"), ("FC", "84"), ("FC", "10"),
    ]
    assert [(st.name, len(st.items)) for st in lay.stages] == [("stage 1", 2), ("stage 2", 2), ("classifier", 4)]
    assert [it.kind for it in lay.items[5:]] == ["flatten", "fc", "fc", "fc"]


def test_without_collapse_every_weight_layer_is_drawn():
    for name in ("resnet18", "vgg11", "alexnet_2012"):
        lay = layout(name, collapse=False)
        drawn = {it.name for it in lay.items if it.kind in ("conv", "fc")}
        weights = {r.name for r in model_summary(name, device="meta").rows
                   if r.type in ("Conv2d", "Linear") and ".downsample" not in r.name}
        assert drawn == weights, name
        assert all(b.repeat == 1 for b in lay.blocks)


def repeats(lay: Layout, stage: str) -> list[int]:
    return [b.repeat for b in lay.blocks if b.stage == stage]


def test_resnet152_collapses_repeated_bottlenecks():
    lay = layout("resnet152")
    # Table 1: [3, 8, 36, 3]; each stage's first block changes the shape, the rest repeat.
    assert {s: repeats(lay, s) for s in ("layer1", "layer2", "layer3", "layer4")} == {
        "layer1": [1, 2], "layer2": [1, 7], "layer3": [1, 35], "layer4": [1, 2]}
    x35 = next(b for b in lay.blocks if b.repeat == 35)
    assert x35.names == tuple(f"layer3.{i}" for i in range(1, 36))
    assert [lay.items[i].label for i in x35.items] == ["14 x 14 x 256", "14 x 14 x 256", "14 x 14 x 1024"]
    texts = drawn_texts(draw(lay))
    assert {"x 35", "x 7", "x 2"} <= texts
    assert len(lay.items) < 40  # readable: 152 layers in 29 volumes


def test_resnet110_has_18_blocks_per_stage():
    lay = layout("resnet110")
    assert repeats(lay, "layer1") == [18]  # 16 -> 16 maps throughout: all identical
    assert repeats(lay, "layer2") == [1, 17] and repeats(lay, "layer3") == [1, 17]
    assert "x 18" in drawn_texts(draw(lay))


def test_shortcut_styles_resnet18_projection():
    lay = layout("resnet18")
    kinds = {b.name: (b.shortcut, b.shortcut_op) for b in lay.blocks}
    assert kinds["layer1.0"] == ("identity", "")
    assert kinds["layer2.0"] == ("projection", "1x1 conv, s2")
    assert kinds["layer2.1"] == ("identity", "")
    lines = shortcut_lines(draw(lay))
    assert lines["layer1.0"] == ("identity", "-")
    assert lines["layer2.0"][0] == "projection" and lines["layer2.0"][1] != "-"  # dashed
    assert len(lines) == len(lay.blocks)


def test_shortcut_styles_resnet20_option_a_and_b():
    lay = layout("resnet20")
    assert [(b.name, b.shortcut) for b in lay.blocks if b.shortcut != "identity"] == [
        ("layer2.0", "padded"), ("layer3.0", "padded")]
    assert lay.blocks[1].shortcut_op == "zero-pad, s2"
    lines = shortcut_lines(draw(lay))
    assert lines["layer2.0"][0] == "padded" and lines["layer2.0"][1] != "-"
    assert lines["layer1.0"] == ("identity", "-")
    b = layout("resnet20", shortcut="B")
    assert {blk.name: blk.shortcut for blk in b.blocks}["layer2.0"] == "projection"


@pytest.mark.parametrize("name", ["plain20", "plain34"])
def test_plain_nets_have_blocks_but_no_shortcuts(name):
    lay = layout(name)
    assert lay.blocks and all(b.shortcut is None for b in lay.blocks)
    fig = draw(lay)
    assert shortcut_lines(fig) == {}
    assert "plain net: no shortcuts" in drawn_texts(fig)


def test_stage_outputs_are_the_last_spatial_maps():
    lay = layout("resnet20")
    assert [(s.name, s.output, s.output_shape) for s in lay.stages] == [
        ("stem", "relu", (16, 32, 32)), ("layer1", "layer1.2.relu", (16, 32, 32)),
        ("layer2", "layer2.2.relu", (32, 16, 16)), ("layer3", "layer3.2.relu", (64, 8, 8)),
        ("head", None, ())]


@pytest.mark.parametrize("name", ["lenet5", "vgg19_bn", "resnet152"])
def test_rendered_labels_neither_overlap_nor_leave_the_page(name):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.patches import Polygon

    fig = draw(name)
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    ax, page = fig.axes[0], fig.bbox
    texts = [(t.get_text(), t.get_window_extent(renderer)) for t in ax.texts if t.get_text() != "+"]
    volumes = [c.get_window_extent(renderer) for c in ax.get_children() if isinstance(c, Polygon)]
    for k, (text, box) in enumerate(texts):
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1, text
        assert not any(box.overlaps(other) for _, other in texts[k + 1:]), text
        assert not any(box.overlaps(v) for v in volumes), text


def test_svg_is_valid_xml_with_text_labels_and_png_is_png(tmp_path):
    fig = draw("lenet5")
    svg = save(fig, tmp_path / "lenet5.svg")
    root = ET.parse(svg).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    text = svg.read_text()
    assert "28 x 28 x 6" in text and "conv 5x5, s1" in text  # text stays text (svg.fonttype none)
    assert svg.stat().st_size < 60_000
    png = save(fig, tmp_path / "lenet5.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ClassicNetsError, match="svg"):
        save(fig, tmp_path / "lenet5.txt")


def test_model_instances_and_the_package_function():
    model = classicnets.create_model("lenet5", num_classes=5)
    lay = layout(model, (1, 32, 32))
    assert lay.items[-1].label == "5" and lay.model == "LeNet5"
    with pytest.raises(ValueError, match="input_size"):
        layout(model)
    assert model.fc3.weight.device == torch.device("cpu")  # drawn where it lives, left there
    fig = classicnets.draw(model, (1, 32, 32))
    assert "LeNet5" in drawn_texts(fig)
    importlib.import_module("classicnets.drawing")  # importing the module leaves the function in place
    assert "lenet5" in drawn_texts(classicnets.draw("lenet5"))


def test_cli_draw(cli, tmp_path):
    out = tmp_path / "r20.svg"
    code, stdout, _ = cli("draw", "resnet20", "--model-arg", "shortcut=B", "-o", out)
    assert code == 0 and str(out) in stdout
    assert 'id="shortcut-projection-layer2.0"' in out.read_text()
    code, _, err = cli("draw", "lenet5", "--input-size", "1", "28", "28", "-o", tmp_path / "x.svg")
    assert code == 2 and "32x32" in err
    code, _, err = cli("draw", "lenet5", "-o", tmp_path / "x.jpg")
    assert code == 2 and ".svg" in err
