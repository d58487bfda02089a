"""VGG: the paper's Table 1 columns, torchvision's state_dict layout, the shared ClassicNet surface."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import classicnets
from classicnets.models.vgg import CONFIGS, VGG
from conftest import meta_model, torchvision_keys

# Exact trainable parameters (torchvision's numbers for the same models).
PARAMS = {
    "vgg11": 132_863_336, "vgg13": 133_047_848, "vgg16": 138_357_544, "vgg19": 143_667_240,
    "vgg11_bn": 132_868_840, "vgg13_bn": 133_053_736, "vgg16_bn": 138_365_992, "vgg19_bn": 143_678_248,
}




@pytest.fixture(scope="module")
def vgg11_bn() -> nn.Module:
    # The one real VGG of this file: its 102M-weight first FC layer makes each build ~1 s of CPU.
    torch.manual_seed(0)
    return classicnets.create_model("vgg11_bn")


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_count_is_exact(name):
    model = meta_model(name)
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n == PARAMS[name] == classicnets.model_card(name).params


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_state_dict_is_torchvisions(name):
    ours = [(k, tuple(v.shape)) for k, v in meta_model(name).state_dict().items()]
    assert ours == torchvision_keys(name)
    assert classicnets.model_card(name).torchvision_name == name


@pytest.mark.parametrize(("config", "depth"), [("A", 11), ("B", 13), ("D", 16), ("E", 19)])
def test_configs_have_the_papers_depth(config, depth):
    convs = [v for v in CONFIGS[config] if v != "M"]
    assert len(convs) + 3 == depth  # + the three FC layers
    assert CONFIGS[config].count("M") == 5  # 224 / 2^5 = 7: the 7x7x512 input of the first FC
    with torch.device("meta"):
        model = VGG(CONFIGS[config])
    assert all(m.kernel_size == (3, 3) and m.padding == (1, 1)
               for m in model.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("name", ["vgg16", "vgg16_bn"])
def test_any_classes_and_channels(name):
    model = meta_model(name, num_classes=7, in_channels=1)
    assert model.features[0].weight.shape == (64, 1, 3, 3)
    assert model.classifier[6].weight.shape == (7, 4096)
    assert model.num_classes == 7
    assert model.get_classifier() is model.classifier[6]


def test_batch_norm_after_every_conv():
    model = meta_model("vgg16_bn")
    kinds = [type(m) for m in model.features]
    assert kinds.count(nn.BatchNorm2d) == kinds.count(nn.Conv2d) == 13
    assert all(kinds[i + 1] is nn.BatchNorm2d for i, k in enumerate(kinds) if k is nn.Conv2d)


@pytest.mark.slow
def test_forward_and_gradients_reach_the_first_conv(vgg11_bn):
    vgg11_bn.train()
    x = torch.randn(2, 3, 64, 64)  # 64x64 -> 2x2 maps, pooled up to 7x7 by the adaptive pool
    feats = vgg11_bn.forward_features(x)
    assert feats.shape == (2, 512, 2, 2)
    out = vgg11_bn.forward_head(feats)
    assert out.shape == (2, 1000) and torch.isfinite(out).all()
    # Ask for the first conv's gradient only: no 400 MB of FC weight gradients to allocate.
    (g,) = torch.autograd.grad(out.square().mean(), vgg11_bn.features[0].weight)
    assert g.abs().sum() > 0


def test_glorot_initialisation(vgg11_bn):
    # Section 3.1: Glorot & Bengio's initialisation, zero biases.
    model = vgg11_bn
    for m in (model.features[0], model.features[-4], model.classifier[3], model.classifier[6]):
        fan_out, fan_in = m.weight.shape[0], m.weight[0].numel()
        if isinstance(m, nn.Conv2d):
            fan_out *= m.weight[0, 0].numel()
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert m.weight.abs().max() <= bound
        assert m.weight.abs().max() > 0.9 * bound
        assert (m.bias == 0).all()


def test_dropout_is_half_and_configurable():
    def rates(model):
        return [m.p for m in model.modules() if isinstance(m, nn.Dropout)]

    assert rates(meta_model("vgg11")) == [0.5, 0.5]
    assert rates(meta_model("vgg11", dropout=0.2)) == [0.2, 0.2]


def test_reset_classifier_and_freeze_features():
    model = meta_model("vgg11")
    model.reset_classifier(3)
    assert model.classifier[6].out_features == 3 and model.num_classes == 3
    model.freeze_features()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.6.weight", "classifier.6.bias"}
    assert model.classifier[6].weight.device.type == "meta"  # the new head follows the model
    model.freeze_features(False)
    assert all(p.requires_grad for p in model.parameters())


def test_cards():
    for name in PARAMS:
        card = classicnets.model_card(name)
        assert card.family == "vgg" and card.reference == "arXiv:1409.1556"
        assert card.input_size == (3, 224, 224) and card.num_classes == 1000
    macs = {"vgg11": 7.61e9, "vgg13": 11.31e9, "vgg16": 15.47e9, "vgg19": 19.63e9}
    for name, m in macs.items():
        assert classicnets.model_card(name).macs == classicnets.model_card(name + "_bn").macs == m
