"""What a model can take, checked before anything is allocated: its builder's arguments and the
input size. Every check builds the model on the meta device, where a forward pass computes shapes
and nothing else, so asking about a 100,000 x 100,000 input costs microseconds, not 120 GB.
``train``, ``summary`` and ``draw`` call these first, and a person's mistake becomes one line
naming the argument and what the model takes.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import InputError
from . import create_model, model_card
from .registry import BUILDERS

# The largest side any command takes: the checkpoint format's own bound (checkpoint._check_meta).
MAX_SIDE = 65536
# Set by the data or the command, never by --model-arg.
_RESERVED = ("num_classes", "in_channels")


def model_arguments(name: str) -> list[str]:
    """The keyword arguments ``name``'s builder takes, besides ``num_classes`` and ``in_channels``:
    its own, and those of the network class it passes ``**kwargs`` on to."""
    builder = BUILDERS[name]
    params = inspect.signature(builder).parameters.values()
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if any(p.kind == p.VAR_KEYWORD for p in params):
        net = type(_build(name, {}))
        names |= {p.name for p in inspect.signature(net.__init__).parameters.values()
                  if p.default is not p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return sorted(names - set(_RESERVED))


def check_model_args(name: str, kwargs: dict, flag: str = "--model-arg") -> nn.Module:
    """The model built on the meta device with ``kwargs``, or an :class:`InputError` that names the
    argument and lists the ones ``name`` knows."""
    model_card(name)  # an unknown model name: UnknownModelError, with the close names
    known = model_arguments(name) if kwargs else []
    for key in kwargs:
        if key in _RESERVED:
            raise InputError(f"{flag} {key}=...: {key} is not a builder argument: it comes from the data "
                             f"(train) or from --{key.replace('_', '-')} (summary)")
        if key not in known:
            raise InputError(f"{flag} {key}=...: {name} has no argument {key!r}; it takes "
                             f"{', '.join(known) if known else 'none'}")
    try:
        return _build(name, kwargs)
    except (TypeError, ValueError, AssertionError) as exc:
        given = " ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise InputError(f"{flag} {given}: {name} refused it: {exc}") from None


def check_input_size(name: str, input_size: Sequence[int], kwargs: dict | None = None, *,
                     flag: str = "--input-size", channels_in_flag: bool = True) -> None:
    """Raise an :class:`InputError` unless ``name`` (with ``kwargs``) takes a (C, H, W) input: too
    small for its layers, not the size it is built for, or larger than :data:`MAX_SIDE`. Messages
    quote ``flag`` as the user wrote it: with the channels (summary, draw) or without (train)."""
    c, h, w = (int(v) for v in input_size)
    quoted = [c, h, w] if channels_in_flag else [h, w]
    shown = f"{flag} {' '.join(str(v) for v in quoted)}"
    if max(h, w) > MAX_SIDE:
        raise InputError(f"{shown}: at most {MAX_SIDE:,} pixels a side")
    model = check_model_args(name, kwargs or {})
    problem = _forward_problem(model, (c, h, w))
    if problem is None:
        return
    if isinstance(problem, ValueError) and name in str(problem):
        raise InputError(f"{shown}: {problem}")  # the model's own words: LeNet-5 takes 32x32 only
    side = smallest_side(name, kwargs or {}, c)
    fix = f"{flag} {c} {side} {side}" if channels_in_flag else f"{flag} {side} {side}"
    hint = f"the smallest input {name} takes is {c} x {side} x {side} ({fix})" if side else f"{name} cannot take it"
    raise InputError(f"{shown}: too small for {name}'s layers ({_first_line(problem)}); {hint}")


def smallest_side(name: str, kwargs: dict, channels: int) -> int | None:
    """The smallest square input side ``name`` takes (a binary search of meta forward passes up to
    its native size), or None if even that fails."""
    model = _build(name, kwargs)
    low, high = 1, max(model_card(name).input_size[1:])
    if _forward_problem(model, (channels, high, high)) is not None:
        return None
    while low < high:
        mid = (low + high) // 2
        if _forward_problem(model, (channels, mid, mid)) is None:
            high = mid
        else:
            low = mid + 1
    return low


def activation_bytes(name: str, input_size: Sequence[int], kwargs: dict | None = None) -> int:
    """Bytes of every layer's output for one float32 image (the forward activations a training step
    keeps for its backward pass), from a meta forward pass."""
    model = _build(name, kwargs or {}).eval()  # batch norm in training mode refuses a batch of one
    total = 0

    def count(_module, _inputs, output):
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel() * 4

    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(torch.empty(1, *input_size, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return total


def _build(name: str, kwargs: dict) -> nn.Module:
    """``name`` on the meta device (no weights); a builder that computes on tensors while it builds
    (lenet5_1998's connection table) is built on the CPU and then moved to meta."""
    try:
        with torch.device("meta"):
            return create_model(name, **kwargs)
    except NotImplementedError:
        return create_model(name, **kwargs).to("meta")


def _forward_problem(model: nn.Module, input_size: tuple[int, int, int]) -> Exception | None:
    try:
        with torch.no_grad():
            model.eval()(torch.empty(1, *input_size, device="meta"))
    except (RuntimeError, ValueError, IndexError) as exc:
        return exc
    return None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
