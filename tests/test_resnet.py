"""ResNet and its plain controls: Table 1 (ImageNet), section 4.2 (CIFAR-10), shortcuts A/B/C,
torchvision's state_dict layout, zero-init residuals, He initialisation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import classicnets
from classicnets.models.resnet import BasicBlock, Bottleneck, PadShortcut
from conftest import meta_model, torchvision_keys

# Exact trainable parameters of the default models.
IMAGENET = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
            "resnet101": 44_549_160, "resnet152": 60_192_808}
PLAIN_IMAGENET = {"plain18": 11_515_688, "plain34": 21_623_848}
CIFAR = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962}  # option A = plain
PARAMS = {**IMAGENET, **PLAIN_IMAGENET,
          **{f"resnet{d}": n for d, n in CIFAR.items()}, **{f"plain{d}": n for d, n in CIFAR.items()}}




def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def blocks(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (BasicBlock, Bottleneck))]


def count_macs(model: nn.Module, size: tuple[int, int, int]) -> int:
    total = 0

    def hook(m, inputs, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out[0].numel() * m.in_channels * math.prod(m.kernel_size)
        else:
            total += m.in_features * m.out_features

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles = [m.register_forward_hook(hook) for m in layers]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *size))
    for h in handles:
        h.remove()
    return total


# --- structure and counts ----------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_count_is_exact(name):
    assert n_params(meta_model(name)) == PARAMS[name] == classicnets.model_card(name).params


@pytest.mark.parametrize("name", sorted(IMAGENET))
def test_state_dict_is_torchvisions(name):
    ours = [(k, tuple(v.shape)) for k, v in meta_model(name).state_dict().items()]
    assert ours == torchvision_keys(name)
    assert classicnets.model_card(name).torchvision_name == name


@pytest.mark.parametrize("depth", [18, 34])
def test_plain_imagenet_is_resnet_without_downsample(depth):
    model = meta_model(f"plain{depth}")
    expected = [(k, s) for k, s in torchvision_keys(f"resnet{depth}") if ".downsample." not in k]
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == expected
    assert all(b.downsample is None and not b.residual for b in blocks(model))
    assert classicnets.model_card(f"plain{depth}").torchvision_name is None


@pytest.mark.parametrize(("name", "layers"), [
    ("resnet18", [2, 2, 2, 2]), ("resnet34", [3, 4, 6, 3]), ("resnet50", [3, 4, 6, 3]),
    ("resnet101", [3, 4, 23, 3]), ("resnet152", [3, 8, 36, 3]),
])
def test_table1_blocks_per_stage(name, layers):
    model = meta_model(name)
    assert [len(getattr(model, f"layer{i}")) for i in (1, 2, 3, 4)] == layers


@pytest.mark.slow
@pytest.mark.parametrize("depth", sorted(CIFAR))
def test_cifar_nets_are_6n_plus_2_layers(depth):
    for prefix in ("resnet", "plain"):
        model = classicnets.create_model(f"{prefix}{depth}")
        weighted = [m for m in model.modules()
                    if isinstance(m, (nn.Conv2d, nn.Linear)) and not _in_shortcut(model, m)]
        assert len(weighted) == depth
        assert [model.layer1[0].conv1.out_channels, model.layer2[0].conv1.out_channels,
                model.layer3[0].conv1.out_channels] == [16, 32, 64]
        assert model.fc.out_features == 10 and not hasattr(model, "maxpool")
        card = classicnets.model_card(f"{prefix}{depth}")
        assert card.input_size == (3, 32, 32)
        assert card.macs == count_macs(model, card.input_size)  # the card's count is exact


def _in_shortcut(model: nn.Module, module: nn.Module) -> bool:
    return any(module is m for b in blocks(model) if b.downsample is not None for m in b.downsample.modules())


def test_cifar_option_a_shortcut_has_no_parameters():
    model = classicnets.create_model("resnet20")
    shortcuts = [b.downsample for b in blocks(model) if b.downsample is not None]
    assert len(shortcuts) == 2  # the first block of stages 2 and 3
    assert all(isinstance(s, PadShortcut) for s in shortcuts)
    assert sum(len(list(s.parameters())) + len(list(s.buffers())) for s in shortcuts) == 0
    assert not any(".downsample." in k for k in model.state_dict())


def test_pad_shortcut_is_strided_identity_with_zero_maps():
    x = torch.randn(2, 16, 7, 7)
    y = PadShortcut(32, 2)(x)
    assert y.shape == (2, 32, 4, 4)  # ceil(7 / 2), as a 3x3 stride-2 conv with padding 1 gives
    torch.testing.assert_close(y[:, :16], x[:, :, ::2, ::2], rtol=0, atol=0)
    assert (y[:, 16:] == 0).all()


def test_cifar_option_b_projects_only_where_the_shape_changes():
    model = classicnets.create_model("resnet20", shortcut="B")
    projected = [b for b in blocks(model) if b.downsample is not None]
    assert len(projected) == 2
    assert all(isinstance(b.downsample[0], nn.Conv2d) and b.downsample[0].kernel_size == (1, 1)
               and isinstance(b.downsample[1], nn.BatchNorm2d) for b in projected)
    # 16->32 and 32->64 1x1 projections, each with BN's weight and bias.
    assert n_params(model) == 269_722 + (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def test_option_c_projects_every_block():
    model = classicnets.create_model("resnet20", shortcut="C")
    assert all(isinstance(b.downsample, nn.Sequential) for b in blocks(model))


def test_imagenet_accepts_option_a():
    model = classicnets.create_model("resnet50", shortcut="A", num_classes=10)
    assert all(isinstance(b.downsample, PadShortcut) for b in blocks(model) if b.downsample is not None)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_bad_arguments():
    with pytest.raises(ValueError, match="shortcut"):
        classicnets.create_model("resnet20", shortcut="D")
    with pytest.raises(ValueError, match="zero_init_residual"):
        classicnets.create_model("plain20", zero_init_residual=True)


def test_plain_blocks_have_no_shortcut():
    torch.manual_seed(0)
    model = classicnets.create_model("plain20").train()
    assert all(b.downsample is None and not b.residual for b in blocks(model))
    # With the last BN's gamma and beta at zero the branch outputs zero; a shortcut would show here.
    block = model.layer2[0]
    nn.init.zeros_(block.bn2.weight)
    with torch.no_grad():
        assert (block(torch.randn(2, 16, 32, 32)) == 0).all()


def test_bottleneck_is_v15():
    model = meta_model("resnet50")
    b = model.layer2[0]
    assert (b.conv1.stride, b.conv2.stride, b.conv3.stride) == ((1, 1), (2, 2), (1, 1))
    assert (b.conv1.kernel_size, b.conv2.kernel_size, b.conv3.kernel_size) == ((1, 1), (3, 3), (1, 1))


# --- initialisation ----------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "size", "shortcut"), [
    ("resnet18", 64, "B"),  # basic blocks, projection shortcuts
    ("resnet50", 64, "B"),  # bottlenecks, projection also in layer1.0 (64 -> 256 maps)
    ("resnet20", 32, "A"),
    ("resnet20", 32, "B"),
])
def test_zero_init_residual_makes_every_block_relu_of_its_shortcut(name, size, shortcut):
    torch.manual_seed(0)
    model = classicnets.create_model(name, shortcut=shortcut, zero_init_residual=True).train()
    seen = []

    def hook(block, inputs, out):
        seen.append((block, inputs[0].clone(), out.clone()))

    for b in blocks(model):
        b.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.randn(2, 3, size, size))
        assert len(seen) == len(blocks(model))
        for block, x, out in seen:
            shortcut_out = x if block.downsample is None else block.downsample(x)
            torch.testing.assert_close(out, torch.relu(shortcut_out), rtol=0, atol=0)
    # Only the last BN of each branch is zeroed.
    assert all((b.bn1.weight == 1).all() for b in blocks(model))


def test_zero_init_is_off_by_default():
    model = classicnets.create_model("resnet20")
    assert all((b.bn2.weight == 1).all() for b in blocks(model))


def test_he_initialisation():
    # Section 3.4 initialises as in [13]: N(0, 2 / (k * k * out_channels)) for the convolutions.
    torch.manual_seed(0)
    model = classicnets.create_model("resnet18")
    w = model.layer4[0].conv2.weight  # 2.4M weights: the sample std is within 1%
    expected = math.sqrt(2 / (3 * 3 * 512))
    assert abs(w.std().item() / expected - 1) < 0.01
    assert abs(w.mean().item()) < 0.01 * expected


# --- the ClassicNet surface --------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize(("name", "size"), [("resnet18", 64), ("resnet20", 32), ("plain20", 32)])
def test_features_head_and_gradients(name, size):
    torch.manual_seed(0)
    model = classicnets.create_model(name, num_classes=7, in_channels=1).train()
    assert model.head_name == "fc" and model.get_classifier() is model.fc and model.num_classes == 7
    x = torch.randn(2, 1, size, size)
    feats = model.forward_features(x)
    torch.testing.assert_close(model.eval().features(x), model.forward_features(x))
    model.train()
    out = model.forward_head(feats)
    assert out.shape == (2, 7)
    out.square().mean().backward()
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0


def test_features_is_a_view_not_a_submodule():
    model = meta_model("resnet18")
    assert not any(k.startswith("features.") for k in model.state_dict())
    assert list(dict(model.features.named_children())) == [
        "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    assert model.features.layer1 is model.layer1


@pytest.mark.parametrize("name", ["resnet50", "resnet56"])
def test_reset_classifier_and_freeze_features(name):
    model = classicnets.create_model(name)
    model.reset_classifier(5)
    assert model.fc.out_features == 5 and model.num_classes == 5
    model.freeze_features()
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"fc.weight", "fc.bias"}
    model.freeze_features(False)
    assert all(p.requires_grad for p in model.parameters())


def test_cards():
    for name in IMAGENET:
        card = classicnets.model_card(name)
        assert card.family == "resnet" and card.reference == "arXiv:1512.03385"
        assert card.input_size == (3, 224, 224) and card.num_classes == 1000
    macs = {"resnet18": 1.81e9, "resnet34": 3.66e9, "resnet50": 4.09e9, "resnet101": 7.80e9,
            "resnet152": 11.51e9, "plain18": 1.8e9, "plain34": 3.6e9}
    assert {n: classicnets.model_card(n).macs for n in macs} == macs
    assert classicnets.model_card("resnet20").defaults["shortcut"] == "A"


def test_cifar_width_scales_every_stage_and_keeps_the_depth():
    half = classicnets.create_model("resnet56", width=8, in_channels=1)
    assert half.conv1.out_channels == 8 and half.layer3[-1].conv2.out_channels == 32 and half.fc.in_features == 32
    assert len(half.layer1) == len(classicnets.create_model("resnet56").layer1) == 9
    # 3x3 convolutions dominate: half the width is about a quarter of the parameters.
    assert sum(p.numel() for p in half.parameters()) == 214_402
    assert torch.equal(torch.tensor(half(torch.randn(2, 1, 32, 32)).shape), torch.tensor([2, 10]))
    for bad in (0, -4, 2.5, True):
        with pytest.raises(ValueError, match="width must be a positive integer"):
            classicnets.create_model("plain20", width=bad)
