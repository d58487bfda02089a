"""The cost calculator is arithmetic; PyTorch's own counter on real layers must agree with it."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from classicnets.costs import conv_cost, format_cost_table, stack_cost
from classicnets.errors import InputError


def counted(in_shape, out_channels, k, stride, padding):
    """Output shape (H, W, C) and multiply-adds of a real nn.Conv2d, as FlopCounterMode counts them."""
    H, W, C = in_shape
    padding = 0 if padding == "valid" else padding
    if padding == "same" and stride != 1:
        padding = k // 2
    conv = nn.Conv2d(C, out_channels, k, stride=stride, padding=padding, bias=False)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        y = conv(torch.zeros(1, C, H, W))
    return (y.shape[2], y.shape[3], y.shape[1]), counter.get_total_flops() // 2


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 24), w=st.integers(1, 24), c=st.integers(1, 8), out=st.integers(1, 8),
       k=st.integers(1, 7), stride=st.integers(1, 3), padding=st.sampled_from(["same", "valid", 0, 1, 2]))
def test_arithmetic_equals_the_counter_on_real_layers(h, w, c, out, k, stride, padding):
    if k > min(h, w) or (padding == "same" and stride != 1 and k % 2 == 0):
        with pytest.raises(InputError):
            conv_cost((h, w, c), out, k, stride, padding)
        return
    if padding not in ("same", "valid") and (h + 2 * padding - k) < 0:
        return  # PyTorch refuses it too
    from classicnets.costs import _conv

    assert _conv((h, w, c), out, k, stride, padding) == counted((h, w, c), out, k, stride, padding)


def test_huge_layers_cost_nothing_to_compute():
    (shape, macs), = [(s, m) for _, s, m in stack_cost((1024, 1024, 128), [(128, 3)])]
    assert shape == (1024, 1024, 128) and macs == 1024 * 1024 * 128 * 3 * 3 * 128
    assert "G multiply-adds" in format_cost_table(stack_cost((1024, 1024, 128), [(128, 3)]))


@pytest.mark.parametrize("layer", ["0x5", "16x0", "16x-1", "16", "16x", "x5", "16x5x2", "a", "16 x 5x"])
def test_cost_command_refuses_malformed_layers(cli, layer):
    code, out, err = cli("cost", layer)
    assert code == 2 and repr(layer) in err and "OUT_CHANNELSxKERNEL" in err and "Traceback" not in err
    assert out == ""


def test_cost_command_refuses_a_kernel_larger_than_its_input(cli):
    code, _, err = cli("cost", "16x1000000")
    assert code == 2 and "1000000x1000000 kernel does not fit a 28 x 28 input" in err


def test_cost_command_takes_the_lecture_example(cli):
    code, out, _ = cli("cost", "16x1", "32x5")
    assert code == 0 and "12,443,648" in out and "(12.4 M multiply-adds)" in out
