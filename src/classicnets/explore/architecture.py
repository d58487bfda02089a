"""The architecture and arithmetic views: any zoo model at an input size and number of classes
of the person's choosing, as ``classicnets draw``, ``summary`` and ``models NAME`` show it, and
the ``classicnets cost`` calculator.

Nothing here holds weights: the summary and the drawing are computed on the meta device (shapes
and counts only), so VGG-16 at 224 x 224 costs milliseconds, and an input size is checked by
:func:`classicnets.models.checks.check_input_size` before anything is built.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from functools import lru_cache

from ..costs import format_cost_table, parse_layer, stack_cost
from ..errors import ClassicNetsError
from ..models import list_models, model_card
from ..models.checks import check_input_size
from ..summary_table import Summary, model_summary
from .upload import Refused

MAX_CLASSES = 100_000  # ImageNet-21k has 21,841; beyond this a head is a typo, not a model
MAX_CHANNELS = 64  # input channels: images have 1 to 4; 64 leaves room for stacked frames
MAX_COST_VALUE = 1_000_000  # sides, channels and kernels of the cost calculator
MAX_COST_LAYERS = 32
_MATPLOTLIB = threading.Lock()  # one drawing at a time: matplotlib's text layout shares caches


@dataclass(frozen=True)
class Spec:
    """A zoo model at a size: what the architecture view draws (hashable, so drawings are cached)."""

    model: str
    input_size: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    kwargs: tuple[tuple[str, object], ...] = ()  # builder arguments (a checkpoint's model_kwargs)

    def builder_args(self) -> dict:
        return {**dict(self.kwargs), "in_channels": self.input_size[0]}


def _whole(query: dict, key: str, low: int, high: int, what: str) -> int | None:
    """An integer query parameter within [low, high], or None when it is absent."""
    text = query.get(key, "")
    if text == "":
        return None
    if not text.strip().isdigit() or not low <= int(text) <= high:
        raise Refused(400, f"{what} {text!r}: expected a whole number from {low:,} to {high:,}")
    return int(text)


def spec_for(query: dict, trained: dict[str, dict]) -> Spec:
    """The model the query names (a zoo model, or the model of trained weights in ``trained``: name
    -> its description), at the size it asks for (``c``, ``h``, ``w``, ``classes``), checked."""
    name = query.get("model", "")
    if name in trained:
        t = trained[name]
        model, size, classes, kwargs = t["model"], t["input_size"], len(t["classes"]), t["model_kwargs"]
    elif name in list_models():
        card = model_card(name)
        model, size, classes, kwargs = name, card.input_size, card.num_classes, {}
    else:
        raise Refused(404, f"unknown model {name!r}: expected a zoo model (classicnets models) or loaded weights")
    c = _whole(query, "c", 1, MAX_CHANNELS, "input channels") or size[0]
    h = _whole(query, "h", 1, 1 << 30, "input height") or size[1]
    w = _whole(query, "w", 1, 1 << 30, "input width") or size[2]
    classes = _whole(query, "classes", 1, MAX_CLASSES, "classes") or classes
    try:  # the spatial check, at the channels the builder is made for (channels change no shape)
        check_input_size(model, (model_card(model).input_size[0], h, w), kwargs, flag="input", channels_in_flag=False)
    except ClassicNetsError as exc:
        raise Refused(400, str(exc)) from None
    return Spec(model, (c, h, w), classes, tuple(sorted(kwargs.items())))


def summary_json(spec: Spec) -> dict:
    """The summary table as ``classicnets summary`` prints it, and the model's card."""
    s: Summary = model_summary(spec.model, spec.input_size, spec.num_classes, device="meta", **spec.builder_args())
    card = model_card(spec.model).as_dict()
    return {"model": spec.model, "input_size": list(spec.input_size), "num_classes": spec.num_classes,
            "header": list(Summary.HEADER), "rows": [list(r) for r in s.cells()],
            "totals": [list(t) for t in s.totals()], "total_params": s.total_params, "card": card}


@lru_cache(maxsize=32)
def drawing_svg(spec: Spec) -> str:
    """``classicnets draw`` as SVG text (text kept as text: the page's own fonts, nothing fetched)."""
    import matplotlib

    from ..drawing import draw

    with _MATPLOTLIB, matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "classicnets"}):
        fig = draw(spec.model, spec.input_size, **spec.builder_args())
        out = io.StringIO()
        fig.savefig(out, format="svg", metadata={"Date": None}, facecolor="white")
    return out.getvalue()


def _cost_input(text: str) -> tuple[int, int, int]:
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) != 3 or not all(p.isdigit() and 1 <= int(p) <= MAX_COST_VALUE for p in parts):
        raise Refused(400, f"input {text!r}: expected HxWxC with whole numbers from 1 to {MAX_COST_VALUE:,}, "
                           f"e.g. 28x28x192")
    h, w, c = (int(p) for p in parts)
    return h, w, c


def cost_json(query: dict) -> dict:
    """``classicnets cost --input H W C LAYERS...``: the same rows, total and table."""
    shape = _cost_input(query.get("input", "28x28x192"))
    specs = [s for s in query.get("layers", "32x5").replace(",", " ").split() if s]
    if not 1 <= len(specs) <= MAX_COST_LAYERS:
        raise Refused(400, f"layers: expected 1 to {MAX_COST_LAYERS} layers as OUT_CHANNELSxKERNEL, e.g. 16x1 32x5")
    try:
        layers = [parse_layer(s) for s in specs]
        if max(max(layer) for layer in layers) > MAX_COST_VALUE:
            raise Refused(400, f"layers: at most {MAX_COST_VALUE:,} channels and kernel size")
        costs = stack_cost(shape, layers)
    except ClassicNetsError as exc:
        raise Refused(400, str(exc)) from None
    return {"input": list(shape), "rows": [{"layer": d, "shape": list(s), "macs": m} for d, s, m in costs],
            "total": sum(m for _, _, m in costs), "table": format_cost_table(costs, in_shape=shape)}
