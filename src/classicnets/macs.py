"""Multiply-adds of layers the flop counter cannot see, or sees wrongly.

:func:`~classicnets.summary_table.summary` counts with
:class:`torch.utils.flop_counter.FlopCounterMode`, which knows convolutions, linear layers and
matrix products. A layer made of element-wise ops that nevertheless does dot-product-like work
declares its cost here with :func:`register_macs`; the rule's count replaces what the counter saw
inside the module's own forward.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import nn

from .models.lenet import EuclideanRBF, SparseConv2d

__all__ = ["MacRule", "register_macs", "rule_for"]


MacRule = Callable[[nn.Module, tuple, Any], int]
_MAC_RULES: dict[type, MacRule] = {}


def register_macs(module_type: type[nn.Module]) -> Callable[[MacRule], MacRule]:
    """Decorator: declare the multiply-adds of ``module_type`` as ``rule(module, inputs, output)``.

    The rule's count replaces what FlopCounterMode saw inside the module's own forward (child
    modules are still counted by themselves). Use it for layers built from element-wise ops that
    nevertheless do dot-product-like work, such as a Euclidean RBF layer.
    """

    def decorate(rule: MacRule) -> MacRule:
        _MAC_RULES[module_type] = rule
        return rule

    return decorate


# LeNet-5 (1998)'s two layers whose cost the counter misjudges. They are registered here, with
# the counting convention, rather than in the model file.


@register_macs(EuclideanRBF)
def _rbf_macs(module: EuclideanRBF, inputs: tuple, output: Any) -> int:
    # y_i = sum_j (x_j - w_ij)^2: one subtract-square-accumulate per (input, class) pair, the
    # work of a dot product; 84 x 10 = 840 per image. The counter sees only element-wise ops.
    return inputs[0].shape[0] * module.centers.numel()


@register_macs(SparseConv2d)
def _sparse_conv_macs(module: SparseConv2d, inputs: tuple, output: Any) -> int:
    # Only the connections of Table I do work (C3: 60 kernels of 5x5 on 10x10 outputs =
    # 150,000); the forward pass runs them as one dense convolution with zero kernels, which
    # the counter would charge in full (240,000).
    n, _, *spatial = output.shape
    return n * module.weight.numel() * math.prod(spatial)


def rule_for(module: nn.Module) -> MacRule | None:
    """The rule registered for ``module``'s class or its nearest base class, if any."""
    for cls in type(module).__mro__:
        if cls in _MAC_RULES:
            return _MAC_RULES[cls]
    return None
