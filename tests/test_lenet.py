"""LeNet-5, modern and as published in LeCun et al. 1998."""

import pytest
import torch
from torch import nn

import classicnets
from classicnets import native
from classicnets.models.lenet import rbf_codes


def n_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# Table I of the paper, written from the text of section II.B rather than copied from the
# implementation's grid: the first six C3 maps take contiguous triples of S2 maps, the next six
# contiguous quadruples, the next three non-contiguous quadruples, the last all six.
PAPER_C3_INPUTS = [
    {0, 1, 2}, {1, 2, 3}, {2, 3, 4}, {3, 4, 5}, {4, 5, 0}, {5, 0, 1},
    {0, 1, 2, 3}, {1, 2, 3, 4}, {2, 3, 4, 5}, {3, 4, 5, 0}, {4, 5, 0, 1}, {5, 0, 1, 2},
    {0, 1, 3, 4}, {1, 2, 4, 5}, {0, 2, 3, 5},
    {0, 1, 2, 3, 4, 5},
]


@pytest.fixture
def paper():
    torch.manual_seed(0)
    return classicnets.create_model("lenet5_1998")


# ---------------------------------------------------------------------------------------------
# lenet5 (modern)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pool", ["max", "avg"])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_lenet5_params_and_forward(pool, activation):
    model = classicnets.create_model("lenet5", pool=pool, activation=activation)
    assert n_trainable(model) == 61_706 == classicnets.model_card("lenet5").params
    expected_pool = nn.MaxPool2d if pool == "max" else nn.AvgPool2d
    assert isinstance(model.features.pool1, expected_pool) and isinstance(model.features.pool2, expected_pool)
    expected_act = nn.ReLU if activation == "relu" else nn.Tanh
    assert all(isinstance(model.features.get_submodule(f"act{i}"), expected_act) for i in range(1, 5))
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_lenet5_defaults_are_max_relu():
    model = classicnets.create_model("lenet5")
    assert isinstance(model.features.pool1, nn.MaxPool2d)
    assert isinstance(model.features.act1, nn.ReLU)
    assert classicnets.model_card("lenet5").defaults == {"pool": "max", "activation": "relu"}


@pytest.mark.parametrize(("pool", "activation", "order"), [
    ("max", "relu", ["conv1", "pool1", "act1", "conv2", "pool2", "act2"]),
    ("max", "tanh", ["conv1", "act1", "pool1", "conv2", "act2", "pool2"]),
    ("avg", "relu", ["conv1", "act1", "pool1", "conv2", "act2", "pool2"]),
])
def test_lenet5_pools_before_relu_only_where_they_commute(pool, activation, order):
    model = classicnets.create_model("lenet5", pool=pool, activation=activation)
    assert list(model.features._modules)[:6] == order


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_lenet5_pool_then_relu_is_bit_identical_to_relu_then_pool(memory_format):
    """The pool-first order (faster) must give exactly the textbook conv-ReLU-pool outputs and
    gradients, ties and all-negative windows included. The layers run one by one (the fused first
    block's weight gradient agrees to rounding only: tests/test_fused.py)."""
    torch.manual_seed(0)
    model = classicnets.create_model("lenet5")
    f = model.features
    textbook = nn.Sequential(f.conv1, f.act1, f.pool1, f.conv2, f.act2, f.pool2, *list(f)[6:], model.fc3)
    model.to(memory_format=memory_format)
    x = torch.randn(32, 1, 32, 32)
    x[:4] = 0.0  # all-zero images: every window of the first block is a tie
    x[4:8] = -x[4:8].abs()  # mostly negative windows
    x = x.contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (32,))
    grads = []
    with native.turned_off("fused_blocks"):
        for net in (model, textbook):
            out = net(x)
            loss = nn.functional.cross_entropy(out, y)
            grads.append((out, torch.autograd.grad(loss, list(model.parameters()))))
    (out_a, g_a), (out_b, g_b) = grads
    assert torch.equal(out_a, out_b)
    assert all(torch.equal(a, b) for a, b in zip(g_a, g_b, strict=True))


@pytest.mark.parametrize("kwargs", [{"pool": "min"}, {"activation": "sigmoid"}])
def test_lenet5_rejects_unknown_options(kwargs):
    with pytest.raises(ValueError, match="must be one of"):
        classicnets.create_model("lenet5", **kwargs)


@pytest.mark.parametrize("name", ["lenet5", "lenet5_1998"])
def test_input_must_be_32x32(name):
    with pytest.raises(ValueError, match="32x32"):
        classicnets.create_model(name)(torch.randn(1, 1, 28, 28))


def test_lenet5_macs_match_the_card():
    model = classicnets.create_model("lenet5")
    macs = []

    def count(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs.append(output[0].numel() * module.in_channels * kh * kw)
        elif isinstance(module, nn.Linear):
            macs.append(module.in_features * module.out_features)

    for m in model.modules():
        m.register_forward_hook(count)
    model(torch.randn(1, 1, 32, 32))
    assert sum(macs) == classicnets.model_card("lenet5").macs == 416_520


# ---------------------------------------------------------------------------------------------
# lenet5_1998: counts
# ---------------------------------------------------------------------------------------------


def test_paper_parameter_counts(paper):
    f = paper.features
    counts = {name: n_trainable(f.get_submodule(name)) for name in ["c1", "s2", "c3", "s4", "c5", "f6"]}
    # Section II.B gives each layer's count.
    assert counts == {"c1": 156, "s2": 12, "c3": 1_516, "s4": 32, "c5": 48_120, "f6": 10_164}
    assert n_trainable(paper.output) == 0
    assert n_trainable(paper) == 60_000 == classicnets.model_card("lenet5_1998").params


def test_paper_forward_shapes(paper):
    x = torch.randn(2, 1, 32, 32)
    shapes = []
    for layer in paper.features:
        x = layer(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes[0] == (6, 28, 28) and shapes[2] == (6, 14, 14)  # C1, S2
    assert shapes[4] == (16, 10, 10) and shapes[6] == (16, 5, 5)  # C3, S4
    assert shapes[8] == (120, 1, 1) and shapes[-1] == (84,)  # C5, F6
    assert paper(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_paper_macs_match_the_card():
    # C1 28*28*6*25, C3 10*10*(1,500 Table I weights), C5 400*120, F6 120*84, RBF 84*10.
    expected = 117_600 + 150_000 + 48_000 + 10_080 + 840
    assert classicnets.model_card("lenet5_1998").macs == expected


# ---------------------------------------------------------------------------------------------
# lenet5_1998: the layers
# ---------------------------------------------------------------------------------------------


def test_c3_connections_are_table_one(paper):
    c3 = paper.features.c3
    x = torch.randn(1, 6, 14, 14, requires_grad=True)
    y = c3(x)
    for c3_map, expected in enumerate(PAPER_C3_INPUTS):
        (grad,) = torch.autograd.grad(y[0, c3_map].sum(), x, retain_graph=True)
        depends_on = {s2 for s2 in range(6) if grad[0, s2].abs().sum() > 0}
        assert depends_on == expected, f"C3 map {c3_map}"


def test_c3_stores_only_connected_kernels(paper):
    c3 = paper.features.c3
    assert c3.weight.shape == (60, 5, 5) and c3.bias.shape == (16,)
    assert set(c3.state_dict()) == {"weight", "bias"}  # the index buffers are not saved
    dense = c3.dense_weight()
    for c3_map, inputs in enumerate(PAPER_C3_INPUTS):
        for s2 in range(6):
            assert (dense[c3_map, s2].abs().sum() > 0) == (s2 in inputs)


@pytest.mark.parametrize("name, maps", [("s2", 6), ("s4", 16)])
def test_subsampling_is_a_scaled_window_sum(paper, name, maps):
    layer = paper.features.get_submodule(name)
    params = list(layer.parameters())
    assert [p.shape for p in params] == [(maps,), (maps,)]  # one coefficient, one bias per map
    x = torch.randn(2, maps, 4, 4)
    window_sum = x.reshape(2, maps, 2, 2, 2, 2).sum(dim=(3, 5))
    expected = window_sum * layer.weight[:, None, None] + layer.bias[:, None, None]
    torch.testing.assert_close(layer(x), expected)


def test_squashing_function_is_appendix_a(paper):
    act = paper.features.c1_act
    a = torch.linspace(-3, 3, 13)
    torch.testing.assert_close(act(a), 1.7159 * torch.tanh(2 * a / 3))
    torch.testing.assert_close(act(torch.tensor([1.0, -1.0])), torch.tensor([1.0, -1.0]), atol=1e-4, rtol=0)


def test_rbf_targets_are_fixed_plus_minus_one(paper):
    centers = paper.output.centers
    assert centers.shape == (10, 84)
    assert set(centers.unique().tolist()) == {-1.0, 1.0}
    assert not any(p is centers for p in paper.parameters())  # a buffer, not trainable
    assert "output.centers" in paper.state_dict()
    assert len({tuple(c.tolist()) for c in centers}) == 10  # one distinct code per class


def test_rbf_output_is_negative_squared_distance(paper):
    x = torch.randn(3, 84)
    centers = paper.output.centers
    expected = -((x[:, None, :] - centers[None]) ** 2).sum(-1)
    torch.testing.assert_close(paper.output(x), expected)
    # An F6 state equal to a class's code scores 0 for that class, the largest possible logit.
    logits = paper.output(centers[[3]])
    assert logits[0, 3] == 0 and logits.argmax() == 3


def test_rbf_codes_are_deterministic_and_prefix_stable():
    torch.testing.assert_close(rbf_codes(10), rbf_codes(10))
    torch.testing.assert_close(rbf_codes(26)[:10], rbf_codes(10))
    torch.testing.assert_close(rbf_codes(4), rbf_codes(10)[:4])
    assert set(rbf_codes(26).unique().tolist()) == {-1.0, 1.0}
    assert len({tuple(c.tolist()) for c in rbf_codes(26)}) == 26


def test_digit_bitmaps_are_7x12():
    from classicnets.models.lenet import DIGIT_BITMAPS

    assert len(DIGIT_BITMAPS) == 10
    for bitmap in DIGIT_BITMAPS:
        assert len(bitmap) == 12 and all(len(row) == 7 and set(row) <= {"#", "."} for row in bitmap)


def test_paper_initialisation_range(paper):
    # Appendix A: uniform in +-2.4 / fan-in of the unit.
    f = paper.features
    for layer, fan_in in [(f.c1, 25), (f.s2, 4), (f.s4, 4), (f.c5, 400), (f.f6, 120)]:
        for p in layer.parameters():
            assert p.abs().max() <= 2.4 / fan_in
            assert p.abs().max() > 0.5 * 2.4 / fan_in  # actually spread over the range
    fan_in = torch.tensor([len(s) * 25 for s in PAPER_C3_INPUTS])
    assert (f.c3.bias.abs() <= 2.4 / fan_in).all()
    per_connection = torch.cat([torch.full((len(s),), 2.4 / (len(s) * 25)) for s in PAPER_C3_INPUTS])
    assert (f.c3.weight.abs().amax(dim=(1, 2)) <= per_connection).all()


# ---------------------------------------------------------------------------------------------
# The shared surface
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lenet5", "lenet5_1998"])
def test_reset_classifier_changes_output_size(name):
    model = classicnets.create_model(name)
    model.reset_classifier(26)
    assert model.num_classes == 26
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 26)
    new_head = 84 * 26 + 26 - (84 * 10 + 10) if name == "lenet5" else 0  # the RBF head has no params
    assert n_trainable(model) == classicnets.model_card(name).params + new_head


def test_paper_reset_classifier_keeps_codes_fixed():
    model = classicnets.create_model("lenet5_1998")
    model.reset_classifier(5)
    assert model.output.centers.shape == (5, 84) and n_trainable(model.output) == 0
    torch.testing.assert_close(model.output.centers, rbf_codes(10)[:5])


@pytest.mark.parametrize("name", ["lenet5", "lenet5_1998"])
def test_num_classes_and_in_channels(name):
    model = classicnets.create_model(name, num_classes=3, in_channels=3)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)


@pytest.mark.parametrize("name", ["lenet5", "lenet5_1998"])
def test_freeze_features_leaves_only_head_trainable(name):
    model = classicnets.create_model(name)
    model.freeze_features()
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in model.get_classifier().parameters()}
    model.freeze_features(False)
    assert n_trainable(model) == classicnets.model_card(name).params


@pytest.mark.parametrize(
    "name, first", [("lenet5", "features.conv1.weight"), ("lenet5_1998", "features.c1.weight")]
)
def test_gradients_reach_the_first_layer(name, first):
    torch.manual_seed(0)
    model = classicnets.create_model(name)
    loss = nn.functional.cross_entropy(model(torch.randn(4, 1, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    grad = model.get_parameter(first).grad
    assert grad is not None and grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())
