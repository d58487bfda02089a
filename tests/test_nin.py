"""Network In Network, the CIFAR-10 model."""

import pytest
import torch
from torch import nn

import classicnets


def n_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return classicnets.create_model("nin")


def test_params(model):
    assert n_trainable(model) == 966_986 == classicnets.model_card("nin").params


def test_layers_are_the_released_configuration(model):
    convs = {n: (m.in_channels, m.out_channels, m.kernel_size[0], m.padding[0])
             for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert convs == {  # (in, out, kernel, padding)
        "features.conv1": (3, 192, 5, 2),
        "features.cccp1": (192, 160, 1, 0),
        "features.cccp2": (160, 96, 1, 0),
        "features.conv2": (96, 192, 5, 2),
        "features.cccp3": (192, 192, 1, 0),
        "features.cccp4": (192, 192, 1, 0),
        "features.conv3": (192, 192, 3, 1),
        "features.cccp5": (192, 192, 1, 0),
        "cccp6": (192, 10, 1, 0),
    }
    # A ReLU after every convolution, the class maps' included.
    layers = list(model.features) + [model.cccp6, model.relu_cccp6]
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Conv2d):
            assert isinstance(layers[i + 1], nn.ReLU)
    assert isinstance(model.features.pool1, nn.MaxPool2d) and isinstance(model.features.pool2, nn.AvgPool2d)
    assert [m.p for m in model.features if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    # The head is the last 1x1 convolution, outside `features`.
    assert model.head_name == "cccp6" and model.get_classifier() is model.cccp6
    assert not any(m is model.cccp6 for m in model.features.modules())


def test_forward_shapes(model):
    x = torch.randn(2, 3, 32, 32)
    f = model.features
    assert f.drop1(f.pool1(torch.zeros(2, 96, 32, 32))).shape[-2:] == (16, 16)
    assert f.pool2(torch.zeros(2, 192, 16, 16)).shape[-2:] == (8, 8)
    assert model.forward_features(x).shape == (2, 192, 8, 8)
    out = model(x)
    assert out.shape == (2, 10)
    assert (out >= 0).all()  # the class maps pass through a ReLU before the average


def test_macs_match_the_card(model):
    macs = []

    def count(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs.append(output[0].numel() * module.in_channels * kh * kw)

    for m in model.modules():
        m.register_forward_hook(count)
    model(torch.randn(1, 3, 32, 32))
    assert sum(macs) == classicnets.model_card("nin").macs == 222_486_528


def test_reset_classifier(model):
    model.reset_classifier(100)
    assert model.num_classes == 100 and model.cccp6.kernel_size == (1, 1)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_num_classes_and_in_channels():
    model = classicnets.create_model("nin", num_classes=4, in_channels=1)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 4)


def test_freeze_features_leaves_only_head_trainable(model):
    model.freeze_features()
    assert {id(p) for p in model.parameters() if p.requires_grad} == {id(p) for p in model.cccp6.parameters()}


def test_gradients_reach_the_first_layer(model):
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    grad = model.features.conv1.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_width_scales_every_layer():
    half = classicnets.create_model("nin", width=0.5, in_channels=1)
    convs = [m for m in half.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [96, 80, 48, 96, 96, 96, 96, 96, 10]
    assert sum(p.numel() for p in half.parameters()) == 241_386
    with pytest.raises(ValueError, match="width must be a positive multiplier"):
        classicnets.create_model("nin", width=0)
