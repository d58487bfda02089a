"""LeNet-5: LeCun, Bottou, Bengio & Haffner, "Gradient-based learning applied to document
recognition", Proc. IEEE 86(11), 1998 (doi:10.1109/5.726791), section II.B and Fig. 2.

Two builders:

* ``lenet5_1998`` is the network as published: the scaled tanh squashing function, trainable
  subsampling (S2, S4), the sparse C3 connection table (Table I) and Euclidean RBF outputs with
  fixed +1/-1 targets. 60,000 trainable parameters, as the paper counts them.
* ``lenet5`` is the simplification everybody means today by "LeNet-5": the same layer sizes, but
  ReLU, max pooling, a fully connected C3 and a linear output layer. 61,706 parameters.

Both take a 32x32 image: the paper pads the 28x28 MNIST digits to 32x32 "so that potentially
distinctive features such as stroke end-points or corners can appear in the center of the
receptive field of the highest-level feature detectors" (section II.B). The data pipeline does
that padding; these models refuse any other size with a clear message.

Layer map (Fig. 2), with the paper's own parameter counts:

    layer  maps x size   kernel   trainable params
    C1     6 x 28x28     5x5          156
    S2     6 x 14x14     2x2           12
    C3    16 x 10x10     5x5        1,516  (Table I: each map sees 3, 4 or 6 of the S2 maps)
    S4    16 x  5x5      2x2           32
    C5   120 x  1x1      5x5       48,120
    F6    84             -         10,164
    out   10 RBF units   -              0  (fixed +1/-1 targets)
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .base import ClassicNet
from .conv import Conv2d
from .fused import conv_pool_relu
from .max_pool import MaxPool2d
from .registry import register_model

_PAPER = "LeCun, Bottou, Bengio & Haffner 1998, Gradient-based learning applied to document recognition"
_DOI = "doi:10.1109/5.726791"
_INPUT = 32


def _check_input(x: torch.Tensor, model: str) -> None:
    if x.shape[-2:] != (_INPUT, _INPUT):
        raise ValueError(
            f"{model} takes {_INPUT}x{_INPUT} images (pad 28x28 digits by 2 pixels on each side, "
            f"as the paper does); got {tuple(x.shape[-2:])}"
        )


# --------------------------------------------------------------------------------------------
# lenet5: the modern simplification
# --------------------------------------------------------------------------------------------

# MaxPool2d: nn.MaxPool2d with a native CPU kernel for LeNet-5's 2x2 pools (same results; max_pool.py).
_POOLS = {"max": MaxPool2d, "avg": nn.AvgPool2d}
_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}
_POOL_FIRST = ["conv1", "pool1", "act1", "conv2", "pool2", "act2"]  # the blocks with max pooling and ReLU


class LeNet5(ClassicNet):
    """conv5x5(6) - pool - conv5x5(16) - pool - FC120 - FC84 - FC(num_classes).

    ``features`` runs up to the 84-unit layer (F6), so it is the whole network but the last
    linear layer, ``fc3``.

    With max pooling and ReLU, each block pools *before* its activation: ReLU never lowers the
    order of two values, so relu(max(window)) and max(relu(window)) are the same number and
    send the gradient to the same input: outputs and gradients are bit for bit those of the
    usual conv - ReLU - pool order (tests/test_lenet.py checks it). The ReLU and its backward
    then touch a quarter of the values. With the channels-last tensors LeNet-5 trains in, the
    step measured 1.06-1.11x faster (nothing in the default layout; benchmarks/results/
    lenet_step_ideas.md). Tanh and average pooling keep the usual order.
    """

    head_name = "fc3"

    def __init__(self, num_classes: int = 10, in_channels: int = 1, pool: str = "max",
                 activation: str = "relu") -> None:
        super().__init__()
        if pool not in _POOLS:
            raise ValueError(f"pool must be one of {sorted(_POOLS)}, got {pool!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        Pool, Act = _POOLS[pool], _ACTIVATIONS[activation]

        def block(n: int) -> list[tuple[str, nn.Module]]:
            layers = [(f"act{n}", Act()), (f"pool{n}", Pool(2))]
            return layers[::-1] if (pool, activation) == ("max", "relu") else layers  # see the docstring

        self.features = nn.Sequential(OrderedDict([
            # Conv2d: nn.Conv2d with native CPU kernels for these two layers' shapes (conv.py).
            ("conv1", Conv2d(in_channels, 6, 5)),     # C1: 32 -> 28
            *block(1),                               # S2: 28 -> 14
            ("conv2", Conv2d(6, 16, 5)),              # C3 (fully connected here): 14 -> 10
            *block(2),                               # S4: 10 -> 5
            ("flatten", nn.Flatten()),
            ("fc1", nn.Linear(16 * 5 * 5, 120)),      # C5: a 5x5 conv on a 5x5 map is a linear layer
            ("act3", Act()),
            ("fc2", nn.Linear(120, 84)),              # F6
            ("act4", Act()),
        ]))
        self.fc3 = nn.Linear(84, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, "lenet5")
        f = self.features
        names = list(f._modules)
        if names[:6] != _POOL_FIRST:  # tanh or average pooling, or layers a user has moved
            return f(x)
        # The same layers and values (the convolutions' weight gradients to rounding), each block
        # fused with its pool and ReLU where the native kernels apply (fused.py): training steps
        # 1.36x faster at batch 128, 1.27x at 64
        # (benchmarks/results/avx512-bf16/lenet_step_ideas.md).
        x = conv_pool_relu(x, f.conv1, f.pool1, f.act1)
        x = conv_pool_relu(x, f.conv2, f.pool2, f.act2)
        for name in names[6:]:
            x = f._modules[name](x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(x)


# --------------------------------------------------------------------------------------------
# lenet5_1998: the network as published
# --------------------------------------------------------------------------------------------

# Appendix A: f(a) = A tanh(S a) with A = 1.7159 and S = 2/3, chosen so that f(1) = 1 and
# f(-1) = -1, i.e. the RBF targets +-1 sit where the second derivative of f is largest.
_TANH_A = 1.7159
_TANH_S = 2.0 / 3.0

# Table I: which S2 feature maps (rows) feed each C3 feature map (columns). "X" = connected.
# Maps 0-5 see 3 contiguous S2 maps, 6-11 see 4 contiguous, 12-14 see 4 non-contiguous, 15 all.
C3_TABLE = (
    # 0123456789012345   <- C3 map
    "X...XXX..XXXX.XX",  # S2 map 0
    "XX...XXX..XXXX.X",  # S2 map 1
    "XXX...XXX..X.XXX",  # S2 map 2
    ".XXX..XXXX..X.XX",  # S2 map 3
    "..XXX..XXXX.XX.X",  # S2 map 4
    "...XXX..XXXX.XXX",  # S2 map 5
)

# The output RBF targets (section II.B): "stylized image[s] of the corresponding character
# class drawn on a 7x12 bitmap (hence the number 84)", with components +1 (ink) and -1. The
# paper's bitmaps (Fig. 3) are not published as data, so these ten are our own drawings of the
# digits in that style: 7 pixels wide, 12 high, one blank row above and below.
DIGIT_BITMAPS = (
    (".......", "..###..", ".#...#.", "#.....#", "#.....#", "#.....#",   # 0
     "#.....#", "#.....#", "#.....#", ".#...#.", "..###..", "......."),
    (".......", "...#...", "..##...", ".#.#...", "...#...", "...#...",   # 1
     "...#...", "...#...", "...#...", "...#...", ".#####.", "......."),
    (".......", "..###..", ".#...#.", "#.....#", "......#", ".....#.",   # 2
     "....#..", "...#...", "..#....", ".#.....", "#######", "......."),
    (".......", ".####..", "#....#.", "......#", ".....#.", "..###..",   # 3
     ".....#.", "......#", "......#", "#....#.", ".####..", "......."),
    (".......", "....#..", "...##..", "..#.#..", ".#..#..", "#...#..",   # 4
     "#######", "....#..", "....#..", "....#..", "....#..", "......."),
    (".......", "#######", "#......", "#......", "#####..", ".....#.",   # 5
     "......#", "......#", "......#", "#....#.", ".####..", "......."),
    (".......", "..###..", ".#.....", "#......", "#......", "#.###..",   # 6
     "##...#.", "#.....#", "#.....#", ".#...#.", "..###..", "......."),
    (".......", "#######", "......#", ".....#.", "....#..", "....#..",   # 7
     "...#...", "...#...", "..#....", "..#....", "..#....", "......."),
    (".......", "..###..", ".#...#.", "#.....#", ".#...#.", "..###..",   # 8
     ".#...#.", "#.....#", "#.....#", ".#...#.", "..###..", "......."),
    (".......", "..###..", ".#...#.", "#.....#", "#.....#", ".#...##",   # 9
     "..###.#", "......#", "......#", ".....#.", "..###..", "......."),
)
_CODE_SEED = 1998  # classes beyond the ten digits get pseudo-random +-1 codes from this seed


def rbf_codes(num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The fixed RBF targets: ``(num_classes, 84)`` of +1/-1.

    Class ``i < 10`` is the 7x12 bitmap of digit ``i``; class ``i >= 10`` gets 84 signs from a
    generator seeded with a constant (the paper used stylized bitmaps of the whole ASCII set,
    which we do not have). Class ``i``'s code does not depend on ``num_classes``.
    """
    digits = torch.tensor([[1.0 if c == "#" else -1.0 for row in b for c in row] for b in DIGIT_BITMAPS])
    extra = max(num_classes - len(DIGIT_BITMAPS), 0)
    g = torch.Generator().manual_seed(_CODE_SEED)
    random_codes = torch.randint(0, 2, (extra, 84), generator=g).float() * 2 - 1
    return torch.cat([digits, random_codes])[:num_classes].to(dtype)


class ScaledTanh(nn.Module):
    """The squashing function of Appendix A: f(a) = 1.7159 tanh(2a/3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _TANH_A * torch.tanh(_TANH_S * x)


class Subsampling(nn.Module):
    """S2 and S4: each unit adds the four inputs of its 2x2 window, multiplies the sum by a
    trainable coefficient and adds a trainable bias, one pair per feature map (section II.B)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels))
        self.bias = nn.Parameter(torch.empty(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The sum of the window. 4 x mean is bit-identical (dividing and multiplying by 4 is
        # exact in binary floating point) and, unlike avg_pool2d(divisor_override=1), survives
        # ONNX export, whose AveragePool has no divisor override.
        window_sum = 4 * F.avg_pool2d(x, 2)
        return window_sum * self.weight[:, None, None] + self.bias[:, None, None]


class SparseConv2d(nn.Module):
    """A convolution in which output map ``o`` sees only the input maps ``table[o]``.

    Only the connected kernels are parameters (``weight`` holds one ``k x k`` kernel per
    connection, in table order), so the trainable count is exactly the paper's; the forward
    pass scatters them into a dense, otherwise zero kernel and runs one ordinary convolution.
    """

    def __init__(self, in_maps: int, table: list[tuple[int, ...]], kernel_size: int) -> None:
        super().__init__()
        self.in_maps, self.out_maps, self.kernel_size = in_maps, len(table), kernel_size
        pairs = [(o, i) for o, inputs in enumerate(table) for i in inputs]
        self.register_buffer("out_index", torch.tensor([o for o, _ in pairs]), persistent=False)
        self.register_buffer("in_index", torch.tensor([i for _, i in pairs]), persistent=False)
        self.weight = nn.Parameter(torch.empty(len(pairs), kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(len(table)))

    def dense_weight(self) -> torch.Tensor:
        k = self.kernel_size
        dense = self.weight.new_zeros(self.out_maps, self.in_maps, k, k)
        return dense.index_put((self.out_index, self.in_index), self.weight)

    def fan_in(self) -> torch.Tensor:
        """Inputs of a unit of each output map: connected maps x kernel area."""
        counts = torch.bincount(self.out_index, minlength=self.out_maps)
        return counts * self.kernel_size**2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.dense_weight(), self.bias)


class EuclideanRBF(nn.Module):
    """The output layer: y_i = sum_j (x_j - w_ij)^2 with fixed targets w_i (section II.B).

    ``y_i`` is a penalty (small = class ``i`` likely), so ``forward`` returns ``-y``: logits in
    the usual sense. The paper's loss (section II.C, eq. 9),
    ``y_{D^p} + log(exp(-j) + sum_i exp(-y_i))``, is cross-entropy over ``-y`` plus a constant
    "rubbish class" term ``exp(-j)``; with ``j`` large it is exactly ``F.cross_entropy(-y, D^p)``.
    """

    def __init__(self, codes: torch.Tensor) -> None:
        super().__init__()
        # A buffer, not a Parameter: the paper keeps the targets fixed; they are saved with
        # the model so that a checkpoint carries the code it was trained against.
        self.register_buffer("centers", codes)

    @property
    def num_classes(self) -> int:
        return self.centers.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -(x[:, None, :] - self.centers).pow(2).sum(-1)


class LeNet5Paper(ClassicNet):
    """LeNet-5 exactly as in Fig. 2: C1-S2-C3-S4-C5-F6 (``features``), then the RBF output."""

    head_name = "output"

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        c3_inputs = [tuple(s2 for s2, row in enumerate(C3_TABLE) if row[c3] == "X") for c3 in range(16)]
        # Every layer up to F6 passes its weighted sums through the squashing function (II.B).
        self.features = nn.Sequential(OrderedDict([
            ("c1", nn.Conv2d(in_channels, 6, 5)),
            ("c1_act", ScaledTanh()),
            ("s2", Subsampling(6)),
            ("s2_act", ScaledTanh()),
            ("c3", SparseConv2d(6, c3_inputs, 5)),
            ("c3_act", ScaledTanh()),
            ("s4", Subsampling(16)),
            ("s4_act", ScaledTanh()),
            ("c5", nn.Conv2d(16, 120, 5)),  # a convolution, not a linear layer: 5x5 maps give 1x1 here
            ("c5_act", ScaledTanh()),
            ("flatten", nn.Flatten()),
            ("f6", nn.Linear(120, 84)),
            ("f6_act", ScaledTanh()),
        ]))
        self.output = EuclideanRBF(rbf_codes(num_classes))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Appendix A: every weight uniform in (-2.4/F_i, 2.4/F_i), F_i the fan-in of its unit.

        We treat a bias as one more weight of its unit (the paper counts it among the unit's
        connections) and draw it from the same range.
        """
        f = self.features
        for layer, fan_in in [(f.c1, f.c1.in_channels * 25), (f.c5, 16 * 25), (f.f6, 120)]:
            for p in (layer.weight, layer.bias):
                p.uniform_(-2.4 / fan_in, 2.4 / fan_in)
        for layer in (f.s2, f.s4):  # four inputs per unit, one shared coefficient
            for p in (layer.weight, layer.bias):
                p.uniform_(-2.4 / 4, 2.4 / 4)
        # C3's units differ in fan-in (75, 100 or 150): scale a U(-1, 1) draw per map.
        bound = 2.4 / f.c3.fan_in().to(f.c3.weight.dtype)
        f.c3.weight.uniform_(-1, 1).mul_(bound[f.c3.out_index][:, None, None])
        f.c3.bias.uniform_(-1, 1).mul_(bound)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, "lenet5_1998")
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(x)

    def reset_classifier(self, num_classes: int) -> None:
        """New fixed RBF targets for ``num_classes`` classes (there is nothing to train)."""
        old = self.output.centers
        self.output = EuclideanRBF(rbf_codes(num_classes).to(device=old.device, dtype=old.dtype))


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------

# Multiply-adds of one 32x32 image, counted layer by layer (the paper publishes connection
# counts, not multiply-adds): C1 28*28*6*25, C3 10*10*16*6*25 (dense here), C5/fc1 400*120,
# F6 120*84, output 84*10.
_LENET5_MACS = 28 * 28 * 6 * 25 + 10 * 10 * 16 * 6 * 25 + 400 * 120 + 120 * 84 + 84 * 10
# As published: C1 28*28*6*25, C3 10*10*1500 (Table I), C5 120*400, F6 84*120, RBF 10*84.
_LENET5_1998_MACS = 28 * 28 * 6 * 25 + 10 * 10 * 1500 + 120 * 400 + 84 * 120 + 10 * 84


@register_model(
    family="lenet",
    paper=_PAPER,
    reference=_DOI,
    input_size=(1, _INPUT, _INPUT),
    num_classes=10,
    params=61_706,
    macs=_LENET5_MACS,  # 416,520
    introduced="The first widely used convolutional network: local receptive fields, shared "
               "weights and subsampling, trained end to end by backpropagation.",
    torchvision_name=None,
    notes="The modern simplification of LeNet-5 (ReLU, max pooling, fully connected C3, linear "
          "output), not the 1998 network; see lenet5_1998 for that. macs is our exact conv+linear "
          "count (416,520, about 0.4 M); the paper publishes no multiply-add figure.",
    defaults={"pool": "max", "activation": "relu"},
)
def lenet5(num_classes: int = 10, in_channels: int = 1, pool: str = "max", activation: str = "relu",
           **kwargs) -> ClassicNet:
    """LeNet-5 as commonly built today; ``pool``/``activation`` switch to the paper's average
    pooling and tanh for ablations."""
    return LeNet5(num_classes, in_channels, pool=pool, activation=activation, **kwargs)


@register_model(
    family="lenet",
    paper=_PAPER,
    reference=_DOI,
    input_size=(1, _INPUT, _INPUT),
    num_classes=10,
    params=60_000,
    macs=_LENET5_1998_MACS,  # 326,520
    introduced="Convolution + trainable subsampling with a sparse C3 connection table to break "
               "symmetry; scaled tanh units; Euclidean RBF outputs against fixed 7x12 class codes.",
    torchvision_name=None,
    notes="As published (Fig. 2, Table I, Appendix A). macs is our exact count of the multiply-adds "
          "in C1, C3, C5, F6 and the RBF output (326,520); the paper counts connections instead "
          "(its per-layer figures sum to 340,908 with the output's 840; they include biases and "
          "the subsampling sums). RBF targets: our own 7x12 digit "
          "bitmaps (the paper's Fig. 3 images are not available as data); classes beyond 10 get "
          "seeded pseudo-random +-1 codes. forward returns -y (negative squared distances) as "
          "logits; they span hundreds, so train with a learning rate about 10x below lenet5's "
          "(SGD 1e-3, momentum 0.9 works). The paper normalises inputs to background -0.1, "
          "foreground 1.175.",
)
def lenet5_1998(num_classes: int = 10, in_channels: int = 1, **kwargs) -> ClassicNet:
    """LeNet-5 exactly as in LeCun et al. 1998."""
    return LeNet5Paper(num_classes, in_channels, **kwargs)

