"""AlexNet: torchvision's single-tower form and the 2012 paper's network."""

import copy

import pytest
import torch
from torch import nn

import classicnets
from classicnets.models.alexnet import AlexNet2012


def n_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# torchvision.models.alexnet().state_dict(), key by key, with shapes (written out here so the
# test needs no torchvision).
TORCHVISION_ALEXNET = {
    "features.0.weight": (64, 3, 11, 11), "features.0.bias": (64,),
    "features.3.weight": (192, 64, 5, 5), "features.3.bias": (192,),
    "features.6.weight": (384, 192, 3, 3), "features.6.bias": (384,),
    "features.8.weight": (256, 384, 3, 3), "features.8.bias": (256,),
    "features.10.weight": (256, 256, 3, 3), "features.10.bias": (256,),
    "classifier.1.weight": (4096, 9216), "classifier.1.bias": (4096,),
    "classifier.4.weight": (4096, 4096), "classifier.4.bias": (4096,),
    "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,),
}


@pytest.fixture(scope="module")
def tv():
    return classicnets.create_model("alexnet")


@pytest.fixture(scope="module")
def paper():
    torch.manual_seed(0)
    return classicnets.create_model("alexnet_2012").eval()


def count_macs(model: nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    """Multiply-adds of the convolutions and linear layers in one forward pass, and its output."""
    macs = []

    def count(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            macs.append(output[0].numel() * module.in_channels // module.groups * k)
        elif isinstance(module, nn.Linear):
            macs.append(module.in_features * module.out_features)

    handles = [m.register_forward_hook(count) for m in model.modules()]
    with torch.no_grad():
        out = model(x)
    for h in handles:
        h.remove()
    return sum(macs), out


# ---------------------------------------------------------------------------------------------
# torchvision's alexnet
# ---------------------------------------------------------------------------------------------


def test_alexnet_params(tv):
    assert n_trainable(tv) == 61_100_840 == classicnets.model_card("alexnet").params


def test_alexnet_state_dict_is_torchvisions(tv):
    sd = tv.state_dict()
    assert list(sd) == list(TORCHVISION_ALEXNET)  # same keys, same order
    assert {k: tuple(v.shape) for k, v in sd.items()} == TORCHVISION_ALEXNET
    assert tv.head_name == "classifier.6" and classicnets.model_card("alexnet").torchvision_name == "alexnet"


def test_alexnet_forward(tv):
    tv.eval()
    with torch.no_grad():
        features = tv.forward_features(torch.randn(1, 3, 224, 224))
        assert features.shape == (1, 256, 6, 6)
        assert tv.forward_head(features).shape == (1, 1000)
        assert tv(torch.randn(1, 3, 64, 64)).shape == (1, 1000)  # adaptive pooling


def test_alexnet_macs(tv):
    macs, _ = count_macs(tv.eval(), torch.randn(1, 3, 224, 224))
    assert macs == 714_188_480
    assert abs(macs - classicnets.model_card("alexnet").macs) / macs < 0.001  # torchvision's 0.714 G


# ---------------------------------------------------------------------------------------------
# alexnet_2012
# ---------------------------------------------------------------------------------------------


def test_paper_params(paper):
    children = [*paper.features.named_children(), *paper.classifier.named_children()]
    layers = {n: n_trainable(m) for n, m in children}
    assert {n: c for n, c in layers.items() if c} == {
        "conv1": 34_944, "conv2": 307_456, "conv3": 885_120, "conv4": 663_936, "conv5": 442_624,
        "fc6": 37_752_832, "fc7": 16_781_312, "fc8": 4_097_000,
    }
    assert n_trainable(paper) == 60_965_224 == classicnets.model_card("alexnet_2012").params


def test_paper_layers(paper):
    f = paper.features
    convs = {n: (m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0], m.groups)
             for n, m in f.named_children() if isinstance(m, nn.Conv2d)}
    assert convs == {  # Fig. 2: kernels, size, stride, padding, GPUs each sees
        "conv1": (96, 11, 4, 0, 1), "conv2": (256, 5, 1, 2, 2), "conv3": (384, 3, 1, 1, 1),
        "conv4": (384, 3, 1, 1, 2), "conv5": (256, 3, 1, 1, 2),
    }
    order = [type(m).__name__ for m in f]
    assert order[:8] == ["Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d"] * 2  # ReLU, LRN, pool
    pools = [m for m in f if isinstance(m, nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride) for p in pools] == [(3, 2)] * 3  # overlapping pooling
    assert [type(m).__name__ for m in paper.classifier] == [
        "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]  # dropout on fc6, fc7
    assert all(m.p == 0.5 for m in paper.classifier if isinstance(m, nn.Dropout))


def test_lrn_matches_section_3_3(paper):
    norms = [m for m in paper.features if isinstance(m, nn.LocalResponseNorm)]
    assert len(norms) == 2
    for lrn in norms:
        # torch's alpha is divided by size inside; 5e-4 / 5 = the paper's 1e-4.
        assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 5e-4, 0.75, 2.0)
    # The paper's formula, written out: b_i = a_i / (k + alpha * sum_{|j-i|<=n/2} a_j^2)^beta.
    a = torch.randn(2, 12, 3, 3) * 30
    n, k, alpha, beta, N = 5, 2.0, 1e-4, 0.75, a.shape[1]
    b = torch.stack([
        a[:, i] / (k + alpha * (a[:, max(0, i - n // 2):min(N - 1, i + n // 2) + 1] ** 2).sum(1)) ** beta
        for i in range(N)
    ], dim=1)
    torch.testing.assert_close(norms[0](a), b)


def test_paper_initialisation(paper):
    named = dict([*paper.features.named_children(), *paper.classifier.named_children()])
    for name in ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]:
        layer = named[name]
        assert abs(layer.weight.std().item() - 0.01) < 0.001, name
        expected_bias = 1.0 if name in {"conv2", "conv4", "conv5", "fc6", "fc7"} else 0.0
        assert torch.all(layer.bias == expected_bias), name


def test_paper_forward_and_macs(paper):
    x = torch.randn(1, 3, 227, 227)
    shapes = []

    def record(module, inputs, output):
        shapes.append(tuple(output.shape[1:]))

    handles = [m.register_forward_hook(record) for m in paper.features]
    try:
        macs, out = count_macs(paper, x)
    finally:
        for h in handles:
            h.remove()
    assert macs == classicnets.model_card("alexnet_2012").macs == 724_406_816
    assert out.shape == (1, 1000)
    convs = [shapes[i] for i, m in enumerate(paper.features) if isinstance(m, nn.Conv2d)]
    assert convs == [(96, 55, 55), (256, 27, 27), (384, 13, 13), (384, 13, 13), (256, 13, 13)]
    assert shapes[-1] == (256, 6, 6)


def test_paper_rejects_224(paper):
    with pytest.raises(ValueError, match="227x227"), torch.no_grad():
        paper(torch.randn(1, 3, 224, 224))


# ---------------------------------------------------------------------------------------------
# The shared surface
# ---------------------------------------------------------------------------------------------


@pytest.fixture(params=["alexnet", "alexnet_2012"])
def fresh(request, tv, paper):
    """A private copy of either model (copying is cheaper than building and initialising)."""
    return copy.deepcopy(tv if request.param == "alexnet" else paper).eval()


def test_reset_classifier(fresh):
    fresh.reset_classifier(7)
    head = fresh.get_classifier()
    assert fresh.num_classes == 7 and isinstance(head, nn.Linear) and head.out_features == 7
    size = 227 if isinstance(fresh, AlexNet2012) else 224
    with torch.no_grad():
        assert fresh(torch.randn(1, 3, size, size)).shape == (1, 7)
    if isinstance(fresh, AlexNet2012):  # the new head gets the paper's init
        assert torch.all(head.bias == 0) and abs(head.weight.std().item() - 0.01) < 0.002


def test_freeze_features_leaves_only_head_trainable(fresh):
    fresh.freeze_features()  # every layer but the head, the hidden FC layers included
    head = {id(p) for p in fresh.get_classifier().parameters()}
    assert {id(p) for p in fresh.parameters() if p.requires_grad} == head
    fresh.freeze_features(False)
    assert all(p.requires_grad for p in fresh.parameters())


def test_gradients_reach_the_first_layer(fresh):
    # torchvision's model takes a small input thanks to adaptive pooling; the paper's needs 227.
    size = 227 if isinstance(fresh, AlexNet2012) else 64
    first = next(fresh.features.parameters())
    for p in fresh.parameters():  # only conv1's weight gradient is needed: skip the others'
        p.requires_grad = p is first
    fresh(torch.randn(1, 3, size, size)).sum().backward()
    assert first.grad is not None and first.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["alexnet", "alexnet_2012"])
def test_num_classes_and_in_channels(name):
    model = classicnets.create_model(name, num_classes=5, in_channels=1)
    assert next(model.features.parameters()).shape[1] == 1
    assert model.num_classes == 5
