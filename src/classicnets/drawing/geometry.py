"""Where everything goes on the page: sizes, line breaking and placement, in inches (the axes
span the figure with 1 data unit = 1 inch; text sizes are in points). No artists are made here.

Sizes are compressed so that one page holds LeNet-5 and VGG-16 alike: the face of a volume grows
with the square root of H (the largest map of the model gets the full height), its thickness
with log2 C; a vector is a thin bar whose height grows with log10 of its width.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

from ..summary_table import format_shape
from .structure import Item, Layout

_FACE = 1.45  # face height of the model's largest map
_FACE_MIN = 0.1
_RECEDE = 0.42  # the receding side (W) is drawn at this fraction of the face scale...
_ANGLE = math.radians(40)  # ...at this angle
_GAP, _BLOCK_GAP, _STAGE_GAP = 0.22, 0.36, 0.4
_FS_SHAPE, _FS_OP, _FS_STAGE, _FS_NOTE = 7.0, 6.5, 7.5, 7.0
_Y_STAGE, _Y_SHAPE, _Y_OP, _Y_VOLUMES = 0.09, 0.29, 0.44, 0.7  # baselines above a row's bottom
_MARGIN, _HEADER, _ROW_GAP, _CONT = 0.2, 0.5, 0.12, 0.32

# The legend's wording, in the order the kinds are listed (solid: identity; dashed: a shortcut
# that changes the shape).
SHORTCUT_LEGEND = {"identity": "identity shortcut", "projection": "projection shortcut (1x1 conv)",
                   "padded": "zero-padded identity shortcut (option A)"}


@functools.lru_cache(maxsize=1024)
def _text_width(text: str, size: float, weight: str = "normal") -> float:
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    if not text:
        return 0.0
    path = TextPath((0, 0), text, size=size, prop=FontProperties(weight=weight))
    return path.get_extents().width / 72 * 1.06  # a little slack for other fonts in SVG viewers


@dataclass
class _Geom:
    t: float  # thickness along the flow (channels)
    h: float  # face height (H)
    dx: float  # receding side (W), horizontal part
    dy: float  # receding side, vertical part
    slot: float  # horizontal room the item takes, labels included

    @property
    def width(self) -> float:
        return self.t + self.dx


def _geometry(items: list[Item]) -> list[_Geom]:
    largest = max([max(it.shape[1:]) for it in items if len(it.shape) == 3] or [1])

    def face(n: int) -> float:
        return max(_FACE_MIN, _FACE * math.sqrt(n / largest))

    out = []
    for it in items:
        if len(it.shape) == 3:
            c, h, w = it.shape
            t, fh, d = 0.05 + 0.065 * math.log2(max(c, 1)), face(h), _RECEDE * face(w)
        else:  # a vector: a thin bar whose height grows with log10 of its width
            n = math.prod(it.shape)
            t, fh, d = 0.08, min(_FACE, 0.3 + 0.25 * math.log10(max(n, 1))), 0.08
        dx, dy = d * math.cos(_ANGLE), d * math.sin(_ANGLE)
        slot = max(t + dx, _text_width(it.label, _FS_SHAPE), _text_width(it.op, _FS_OP))
        out.append(_Geom(t, fh, dx, dy, slot))
    return out


# ----------------------------------------------------------------------------------------------
# Line breaking


def _gap(lay: Layout, i: int) -> float:
    """Horizontal room before item ``i`` when it follows item ``i - 1`` on the same row."""
    a, b = lay.items[i - 1], lay.items[i]
    if a.stage != b.stage:
        return _STAGE_GAP
    if a.block != b.block:
        return _BLOCK_GAP
    return _GAP


def _rows(lay: Layout, geom: list[_Geom], limit: float) -> list[list[int]]:
    """Greedy line breaking: a stage that does not fit starts a new row if it would fit on one;
    a stage wider than a row breaks between its blocks."""
    units: list[tuple[str, list[int]]] = []  # (stage, item indices) kept together
    for i, it in enumerate(lay.items):
        if it.block is not None and units and lay.items[units[-1][1][-1]].block == it.block:
            units[-1][1].append(i)
        else:
            units.append((it.stage, [i]))

    def span(ix: list[int]) -> float:
        return sum(geom[i].slot for i in ix) + sum(_gap(lay, i) for i in ix[1:])

    rows: list[list[int]] = [[]]
    width = 0.0
    for k, (stage, ix) in enumerate(units):
        starts_stage = k == 0 or units[k - 1][0] != stage
        if rows[-1]:
            need = _gap(lay, ix[0]) + span(ix)
            if starts_stage:  # try to keep the whole stage together
                rest = [i for s, u in units[k:] if s == stage for i in u]
                whole = _gap(lay, ix[0]) + span(rest)
                if width + whole > limit and span(rest) + _CONT <= limit:
                    rows.append([])
            if rows[-1] and width + need > limit:
                rows.append([])
        if not rows[-1]:
            width = (_CONT if len(rows) > 1 else 0.0) + span(ix)
        else:
            width += _gap(lay, ix[0]) + span(ix)
        rows[-1].extend(ix)
    return rows


def _row_width(lay: Layout, geom: list[_Geom], row: list[int], first: bool) -> float:
    return (0.0 if first else _CONT) + sum(geom[i].slot for i in row) + sum(_gap(lay, i) for i in row[1:])


def _break_rows(lay: Layout, geom: list[_Geom], max_width: float) -> list[list[int]]:
    """Rows as even as the stages allow: the fewest rows that fit ``max_width``, then the
    narrowest width that still needs no more of them."""
    rows = _rows(lay, geom, max_width)
    total = _row_width(lay, geom, list(range(len(lay.items))), True)
    limit = min(max_width, total / len(rows))
    while limit < max_width:
        trial = _rows(lay, geom, limit)
        if len(trial) <= len(rows):
            return trial
        limit *= 1.03
    return rows


# ----------------------------------------------------------------------------------------------
# Placement


@dataclass
class _Page:
    """The items placed: rows, slots, heights, and the figure's size."""

    lay: Layout
    geom: list[_Geom]
    rows: list[list[int]]
    slot_x: dict[int, float] = field(default_factory=dict)  # left edge of each item's slot
    row_of: dict[int, int] = field(default_factory=dict)
    widths: list[float] = field(default_factory=list)  # where each row ends on the right
    block_top: dict[int, float] = field(default_factory=dict)  # frame top, relative to the centre line
    heights: list[float] = field(default_factory=list)
    centres: list[float] = field(default_factory=list)  # each row's centre line, above its bottom
    row_y0: list[float] = field(default_factory=list)  # each row's bottom on the figure

    def vol_x(self, i: int) -> float:
        """Left edge of the volume, centred in its slot."""
        return self.slot_x[i] + (self.geom[i].slot - self.geom[i].width) / 2

    def row_yc(self, r: int) -> float:
        return self.row_y0[r] + self.centres[r]

    def yc_of(self, i: int) -> float:
        return self.row_yc(self.row_of[i])


@dataclass
class _Header:
    """The title on the left, the legend on the right (or under the title if it does not fit)."""

    head: str
    sub: str
    kinds: list[str]  # the shortcut kinds in the legend, in its order
    legend: list[str]
    height: float = _HEADER


def _place(lay: Layout, max_width: float) -> _Page:
    """Horizontal placement: slot left edges; vertical: each row's height from its contents."""
    geom = _geometry(lay.items)
    page = _Page(lay, geom, _break_rows(lay, geom, max_width))
    for r, row in enumerate(page.rows):
        x = _MARGIN + (_CONT if r else 0.0)
        for k, i in enumerate(row):
            if k:
                x += _gap(lay, i)
            page.slot_x[i], page.row_of[i] = x, r
            x += geom[i].slot
        page.widths.append(x)
    for b, blk in enumerate(lay.blocks):
        page.block_top[b] = max(geom[i].h / 2 + geom[i].dy for i in blk.items) + 0.07
    for row in page.rows:
        hmax = max(geom[i].h for i in row)
        yc = _Y_VOLUMES + hmax / 2
        top = yc + max(geom[i].h / 2 + geom[i].dy for i in row)
        for b in {lay.items[i].block for i in row} - {None}:
            blk = lay.blocks[b]
            if blk.shortcut or blk.repeat > 1:  # room for the shortcut arrow and the note above it
                top = max(top, yc + page.block_top[b] + 0.16 + 0.17)
        page.heights.append(top + 0.1)
        page.centres.append(yc)
    return page


def _header(lay: Layout, title: str | None) -> _Header:
    kinds = [k for k in SHORTCUT_LEGEND if any(b.shortcut == k for b in lay.blocks)]
    legend = [SHORTCUT_LEGEND[k] for k in kinds] or (["plain net: no shortcuts"] if lay.blocks else [])
    return _Header(title if title is not None else lay.model,
                   f"input {format_shape(lay.input_size)} · {lay.params:,} parameters", kinds, legend)


def _figure_size(page: _Page, hd: _Header) -> tuple[float, float]:
    """(width, height) of the figure; sets the header's height and each row's bottom."""
    title_w = _text_width(hd.head, 11, "bold") + 0.15 + _text_width(hd.sub, 8)
    legend_w = sum(_text_width(t, 7) + (0.6 if hd.kinds else 0.0) for t in hd.legend)
    fig_w = max(page.widths) + _MARGIN + (0.35 if len(page.rows) > 1 else 0.12)
    hd.height = _HEADER + (0.25 if _MARGIN + title_w + 0.4 + legend_w > fig_w - _MARGIN else 0.0)
    fig_w = max(fig_w, 2 * _MARGIN + max(title_w, legend_w))
    fig_h = hd.height + sum(page.heights) + _ROW_GAP * (len(page.rows) - 1) + _MARGIN / 2
    y = fig_h - hd.height
    for h in page.heights:
        page.row_y0.append(y - h)
        y -= h + _ROW_GAP
    return fig_w, fig_h
