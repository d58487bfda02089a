"""summary(): shapes, parameters and multiply-adds, checked by hand on small nets and against
the published figures of the zoo; conv_cost(): the lecture's 1 x 1 bottleneck example."""

import json

import pytest
import torch
from torch import nn

import classicnets
from classicnets.summary_table import (
    ROOT_NAME,
    LayerRow,
    Summary,
    conv_cost,
    format_cost_table,
    format_shape,
    model_summary,
    register_macs,
    stack_cost,
    summary,
)


class Net(nn.Module):
    """conv5x5(6, same) - ReLU - maxpool2 - flatten - linear(10) on 1 x 28 x 28."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(6 * 14 * 14, 10))

    def forward(self, x):
        return self.head(self.features(x))


# name, type, output, params, multiply-adds: each by hand
NET_ROWS = [
    ("features.0", "Conv2d", "28 x 28 x 6", 6 * 25 + 6, 28 * 28 * 6 * 25),  # 156, 117,600
    ("features.1", "ReLU", "28 x 28 x 6", 0, 0),
    ("features.2", "MaxPool2d", "14 x 14 x 6", 0, 0),
    ("head.0", "Flatten", "1176", 0, 0),
    ("head.1", "Linear", "10", 1176 * 10 + 10, 1176 * 10),  # 11,770, 11,760
]
NET_PARAMS = 156 + 11_770
NET_MACS = 117_600 + 11_760


def table(s: Summary) -> list[tuple]:
    return [(r.name, r.type, r.output, r.params, r.macs) for r in s.rows]


def test_rows_shapes_params_and_macs_by_hand():
    s = summary(Net(), (1, 28, 28))
    assert table(s) == NET_ROWS
    assert s.rows[0].output_shape == (6, 28, 28)
    assert (s.total_params, s.trainable_params, s.total_macs) == (NET_PARAMS, NET_PARAMS, NET_MACS)
    assert s.activation_bytes == 4 * (2 * 28 * 28 * 6 + 2 * 14 * 14 * 6 + 10)  # float32 outputs
    assert s.input_size == (1, 28, 28)


def test_frozen_parameters_are_not_trainable():
    net = Net()
    net.features.requires_grad_(False)
    s = summary(net, (1, 28, 28))
    assert (s.total_params, s.trainable_params) == (NET_PARAMS, 11_770)


def test_depth_groups_rows_into_their_module():
    s1 = summary(Net(), (1, 28, 28), depth=1)
    assert table(s1) == [
        ("features", "Sequential", "14 x 14 x 6", 156, 117_600),
        ("head", "Sequential", "10", 11_770, 11_760),
    ]
    s0 = summary(Net(), (1, 28, 28), depth=0)
    assert table(s0) == [(ROOT_NAME, "Net", "10", NET_PARAMS, NET_MACS)]
    assert table(summary(Net(), (1, 28, 28), depth=5)) == NET_ROWS
    assert s0.total_macs == s1.total_macs == NET_MACS  # totals do not depend on depth


class Residual(nn.Module):
    """torchvision's BasicBlock pattern: one ReLU module called twice."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)

    def forward(self, x):
        return self.relu(self.conv2(self.relu(self.conv1(x))) + x)


def test_module_called_twice_gets_a_row_per_call():
    s = summary(Residual(), (4, 8, 8))
    conv = (4 * 4 * 9, 8 * 8 * 4 * 4 * 9)  # 144 params, 9,216 multiply-adds
    assert table(s) == [
        ("conv1", "Conv2d", "8 x 8 x 4", *conv),
        ("relu", "ReLU", "8 x 8 x 4", 0, 0),
        ("conv2", "Conv2d", "8 x 8 x 4", *conv),
        ("relu", "ReLU", "8 x 8 x 4", 0, 0),
    ]
    assert s.total_macs == 2 * conv[1]  # the residual addition is not a multiply-add


def test_shared_parameters_are_counted_once():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x):
            return self.fc(self.fc(x))

    s = summary(Twice(), (8,))
    assert table(s) == [("fc", "Linear", "8", 72, 64), ("fc", "Linear", "8", 0, 64)]
    assert (s.total_params, s.total_macs) == (72, 128)


def test_non_leaf_module_with_own_parameters_and_arithmetic_gets_a_row():
    class Project(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 3)
            self.w = nn.Parameter(torch.randn(3, 2))

        def forward(self, x):
            return self.lin(x) @ self.w  # 1x3 @ 3x2: 6 multiply-adds in the model's own forward

    s = summary(Project(), (4,))
    assert table(s) == [(ROOT_NAME, "Project", "2", 6, 6), ("lin", "Linear", "3", 15, 12)]
    assert (s.total_params, s.total_macs) == (21, 18)


@pytest.mark.parametrize(("groups", "params", "macs"), [
    (1, 16 * 8 * 9 + 16, 10 * 10 * 16 * 8 * 9),  # 1,168 params, 115,200 multiply-adds
    (4, 16 * 2 * 9 + 16, 10 * 10 * 16 * 2 * 9),  # each output sees 8/4 = 2 input maps
    (8, 16 * 1 * 9 + 16, 10 * 10 * 16 * 1 * 9),  # depthwise (x2 multiplier)
])
def test_grouped_convolutions(groups, params, macs):
    s = summary(nn.Conv2d(8, 16, 3, padding=1, groups=groups), (8, 10, 10))
    assert table(s) == [(ROOT_NAME, "Conv2d", "10 x 10 x 16", params, macs)]


def test_training_flags_restored_and_forward_ran_in_eval_mode():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten(),
                        nn.Linear(4 * 6 * 6, 2))
    net.train()
    net[1].eval()  # a frozen BN inside a training model must stay as it was
    before = {name: m.training for name, m in net.named_modules()}
    net[1].train()
    before["1"] = True
    summary(net, (3, 8, 8))
    assert {name: m.training for name, m in net.named_modules()} == before
    assert int(net[1].num_batches_tracked) == 0  # eval mode: running statistics untouched
    assert torch.equal(net[1].running_mean, torch.zeros(4))

    net[1].eval()
    before["1"] = False
    summary(net, (3, 8, 8))
    assert {name: m.training for name, m in net.named_modules()} == before


def test_failed_forward_names_the_layer_and_cleans_up():
    net = Net().train()
    with pytest.raises(ValueError, match=r"'head\.1'.*\(1, 32, 32\)"):
        summary(net, (1, 32, 32))
    assert all(m.training for m in net.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())
    assert table(summary(net, (1, 28, 28))) == NET_ROWS  # and it still works


@pytest.mark.parametrize("bad", [None, (), (1, 0, 28), (1.0, 28, 28), "1x28x28"])
def test_bad_input_size(bad):
    with pytest.raises(ValueError, match="input_size"):
        summary(Net(), bad)


def test_register_macs_for_a_layer_the_counter_cannot_see():
    class SquaredDistance(nn.Module):  # y_i = sum_j (x_j - w_ij)^2: element-wise ops only
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, 5))

        def forward(self, x):
            return (x[:, None, :] - self.w).pow(2).sum(-1)

    assert summary(SquaredDistance(), (5,)).total_macs == 0
    register_macs(SquaredDistance)(lambda m, inputs, out: inputs[0].shape[0] * m.w.numel())
    assert summary(SquaredDistance(), (5,)).total_macs == 15


def test_meta_device_gives_the_same_table_without_arithmetic():
    with torch.device("meta"):
        meta = Net()
    assert summary(meta, (1, 28, 28), device="meta") == summary(Net(), (1, 28, 28))
    with pytest.raises(ValueError, match="meta"):
        summary(meta, (1, 28, 28))


def test_to_dict_is_json_and_round_trips():
    s = summary(Net(), (1, 28, 28), depth=1)
    d = json.loads(json.dumps(s.to_dict()))
    assert d["total_macs"] == NET_MACS and d["input_size"] == [1, 28, 28]
    assert d["rows"][0] == {"name": "features", "type": "Sequential", "output_shape": [6, 14, 14],
                            "output": "14 x 14 x 6", "params": 156, "macs": 117_600,
                            "output_bytes": 4 * (2 * 28 * 28 * 6 + 14 * 14 * 6)}
    assert Summary.from_dict(d) == s


def test_str_is_an_aligned_table_with_totals():
    text = str(summary(Net(), (1, 28, 28)))
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("Layer"))
    body = lines[header: header + 1 + len(NET_ROWS) + 2]  # header, rule, rows, rule
    assert body[1].startswith("---") and body[-1].startswith("---")
    assert len({len(line) for line in body}) == 1  # every line the same width: aligned
    assert "11,770" in lines[header + 2 + 4]
    assert "Total params:" in text and "11,926" in text
    assert "Multiply-adds:" in text and "129,360 (0.13 M)" in text
    assert "Input size (H x W x C):" in text and "28 x 28 x 1" in text


def test_format_shape():
    assert format_shape((6, 28, 28)) == "28 x 28 x 6"
    assert format_shape((120,)) == "120"
    assert format_shape((4, 10)) == "10 x 4"
    assert LayerRow("a", "B", (16, 5, 5), 0, 0).output == "5 x 5 x 16"


# --------------------------------------------------------------------------------------------
# The lecture's 1 x 1 convolution example


def test_conv_cost_of_the_5x5_convolution():
    assert conv_cost((28, 28, 192), 32, 5) == 28 * 28 * 32 * 5 * 5 * 192 == 120_422_400


def test_bottleneck_cuts_the_cost_tenfold():
    costs = stack_cost((28, 28, 192), [(16, 1), (32, 5)])
    assert costs == [("1x1 conv, 16", (28, 28, 16), 2_408_448),
                     ("5x5 conv, 32", (28, 28, 32), 10_035_200)]
    assert sum(m for _, _, m in costs) == 12_443_648
    text = format_cost_table(costs, in_shape=(28, 28, 192))
    assert "28 x 28 x 192" in text and "12,443,648" in text and "12.4 M" in text
    assert "120.4 M" in format_cost_table(stack_cost((28, 28, 192), [(32, 5)]))


def test_conv_cost_stride_and_padding():
    assert conv_cost((28, 28, 192), 32, 5, stride=2) == 14 * 14 * 32 * 25 * 192  # "same": ceil(28/2)
    assert conv_cost((28, 28, 192), 32, 5, padding="valid") == 24 * 24 * 32 * 25 * 192
    assert conv_cost((28, 28, 192), 32, 5, padding=0) == 24 * 24 * 32 * 25 * 192
    assert stack_cost((8, 8, 3), [(4, 3, 2)])[0][:2] == ("3x3 conv, 4, stride 2", (4, 4, 4))


# --------------------------------------------------------------------------------------------
# The zoo against published figures


@pytest.mark.parametrize(("name", "gmacs"), [
    # torchvision's published GFLOPS (multiply-adds) at 224 x 224
    ("alexnet", 0.71), ("vgg16", 15.47), ("resnet18", 1.81), ("resnet50", 4.09),
])
def test_zoo_matches_torchvision_published_multiply_adds(name, gmacs):
    with torch.device("meta"):  # shapes and counts only: no weights, no arithmetic, fast
        model = classicnets.create_model(name)
    s = summary(model, (3, 224, 224), device="meta")
    assert round(s.total_macs / 1e9, 2) == gmacs
    assert s.total_params == classicnets.model_card(name).params


def _agrees_to_card_precision(ours: int, card: int) -> bool:
    """``ours`` rounded to as many significant digits as the card gives (1.81 G, 3.6 G) is it."""
    digits = len(str(card).rstrip("0"))
    return float(f"{ours:.{digits}g}") == card


@pytest.mark.parametrize("name", classicnets.list_models())
def test_every_model_matches_its_card(name):
    card = classicnets.model_card(name)
    s = model_summary(name, device="meta")
    assert s.total_params == card.params
    if card.macs is not None:
        assert _agrees_to_card_precision(s.total_macs, card.macs), (s.total_macs, card.macs)


@pytest.mark.parametrize("name", ["lenet5", "lenet5_1998"])
def test_small_zoo_models_match_their_cards_exactly(name):
    card = classicnets.model_card(name)
    s = model_summary(name)  # a real forward pass on the CPU, at the card's input size
    assert s.input_size == card.input_size
    assert (s.total_params, s.total_macs) == (card.params, card.macs)


def test_lenet5_is_about_0_4_million_multiply_adds():
    assert round(model_summary("lenet5").total_macs / 1e6, 1) == 0.4  # 416,520


def test_lenet5_1998_counts_the_rbf_and_only_table_1_connections():
    rows = {r.name: r for r in model_summary("lenet5_1998").rows}
    assert rows["output"].macs == 84 * 10
    assert rows["features.c3"].macs == 10 * 10 * 60 * 25  # 60 connected 5x5 kernels, not 96
    assert rows["features.s2"].macs == 0  # trainable subsampling is element-wise


def test_resnet_depth_one_groups_stages():
    with torch.device("meta"):
        model = classicnets.create_model("resnet18")
    s = summary(model, (3, 224, 224), depth=1, device="meta")
    names = [r.name for r in s.rows]
    assert names == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4",
                     "avgpool", "fc"]
    layer4 = s.rows[names.index("layer4")]
    assert layer4.output == "7 x 7 x 512"
    assert sum(r.macs for r in s.rows) == s.total_macs
