"""The drawing itself: matplotlib artists at the places :mod:`.geometry` computed, and
:func:`save`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from ..errors import ClassicNetsError
from ..report import save_figure
from .geometry import (
    _FS_NOTE,
    _FS_OP,
    _FS_SHAPE,
    _FS_STAGE,
    _HEADER,
    _MARGIN,
    _Y_OP,
    _Y_SHAPE,
    _Y_STAGE,
    _figure_size,
    _Geom,
    _Header,
    _header,
    _Page,
    _place,
    _text_width,
)
from .structure import Layout, layout

__all__ = ["draw", "save"]

_COLORS = {"input": "#d9d9d9", "conv": "#9ecae1", "pool": "#fdae6b", "fc": "#a1d99b",
           "flatten": "#c7e9c0", "other": "#dadaeb"}
_BANDS = ("#f4f7fb", "#fbf7f1")
_SHORTCUT_STYLE = {"identity": ("#333333", "-"), "projection": ("#b03a2e", (0, (5, 2))),
                   "padded": ("#1f618d", (0, (2.5, 2)))}


def draw(model_or_name: str | nn.Module | Layout, input_size: Sequence[int] | None = None, *,
         max_width: float = 11.0, title: str | None = None, collapse: bool = True, **model_kwargs):
    """The network as a picture: a :class:`matplotlib.figure.Figure` (save it with :func:`save`).

    ``model_or_name``: a zoo name, a model instance (with ``input_size``) or a :class:`Layout`.
    ``max_width`` (inches) is where rows wrap. See :mod:`classicnets.drawing` for what is drawn.
    """
    from matplotlib.figure import Figure

    lay = model_or_name if isinstance(model_or_name, Layout) else layout(
        model_or_name, input_size, collapse=collapse, **model_kwargs)
    page = _place(lay, max_width)
    hd = _header(lay, title)
    fig_w, fig_h = _figure_size(page, hd)
    fig = Figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, fig_w)
    ax.set_ylim(0, fig_h)
    ax.set_axis_off()
    # Back to front: bands, block frames and shortcuts, volumes, then the header.
    _draw_stages(ax, page)
    for b in range(len(lay.blocks)):
        _draw_block(ax, page, b)
    _draw_volumes(ax, page)
    _draw_header(ax, hd, fig_w, fig_h)
    return fig


def save(fig, path: str | os.PathLike, dpi: int = 150, *, hint: str | None = None) -> Path:
    """Write a figure as SVG (text kept as text: small and crisp), PNG or PDF, by the suffix;
    atomically, creating its folder (a failure is an :class:`~classicnets.errors.OutputError`
    naming ``path`` and suggesting ``hint``, the option that writes elsewhere)."""
    import matplotlib

    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("svg", "png", "pdf"):
        raise ClassicNetsError(f"{path}: expected a .svg, .png or .pdf file name")
    # Reproducible files (no date, fixed ids), so a redrawn figure only differs where it changed.
    rc = {"svg.fonttype": "none", "svg.hashsalt": "classicnets"}
    metadata = {"Date": None} if fmt == "svg" else ({"Software": None} if fmt == "png" else {"CreationDate": None})
    with matplotlib.rc_context(rc):
        return save_figure(fig, path, hint=hint, format=fmt, dpi=dpi, metadata=metadata, facecolor="white")


# ----------------------------------------------------------------------------------------------
# Shapes


def _shade(color: str, amount: float):
    """``amount`` > 0 lightens towards white, < 0 darkens towards black."""
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(color)
    if amount >= 0:
        return tuple(c + (1 - c) * amount for c in (r, g, b))
    return tuple(c * (1 + amount) for c in (r, g, b))


def _cuboid(ax, x: float, yc: float, g: _Geom, color: str, z: float = 3) -> None:
    from matplotlib.patches import Polygon

    y0, y1 = yc - g.h / 2, yc + g.h / 2
    faces = [
        ([(x, y0), (x + g.t, y0), (x + g.t, y1), (x, y1)], color),  # front: C x H
        ([(x, y1), (x + g.t, y1), (x + g.t + g.dx, y1 + g.dy), (x + g.dx, y1 + g.dy)], _shade(color, 0.45)),
        ([(x + g.t, y0), (x + g.t + g.dx, y0 + g.dy), (x + g.t + g.dx, y1 + g.dy), (x + g.t, y1)],
         _shade(color, -0.18)),  # side: H x W
    ]
    for pts, fc in faces:
        ax.add_artist(Polygon(pts, closed=True, facecolor=fc, edgecolor="#2b2b2b", linewidth=0.5,
                              joinstyle="round", zorder=z))


def _arrow(ax, start, end, color="#555555", lw=0.7, z=2) -> None:
    from matplotlib.patches import FancyArrowPatch

    ax.add_artist(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=6, color=color, linewidth=lw,
                                  shrinkA=0, shrinkB=0, zorder=z))


def _frame(ax, x0: float, y0: float, w: float, h: float, rounding: float, **style) -> None:
    from matplotlib.patches import FancyBboxPatch

    ax.add_artist(FancyBboxPatch((x0, y0), w, h, boxstyle=f"round,pad=0,rounding_size={rounding}", **style))


# ----------------------------------------------------------------------------------------------
# The parts of the picture


def _draw_stages(ax, page: _Page) -> None:
    """Stage bands, one per stretch of a stage on a row."""
    for band, st in enumerate(page.lay.stages):
        for r in sorted({page.row_of[i] for i in st.items}):
            on_row = [i for i in st.items if page.row_of[i] == r]
            x0 = page.slot_x[on_row[0]] - 0.14
            x1 = page.slot_x[on_row[-1]] + page.geom[on_row[-1]].slot + 0.14
            _frame(ax, x0, page.row_y0[r] + 0.02, x1 - x0, page.heights[r] - 0.04, 0.08,
                   facecolor=_BANDS[band % 2], edgecolor="#d5d9e0", linewidth=0.6, zorder=0)
            name = st.name if r == page.row_of[st.items[0]] else f"{st.name} (cont.)"
            ax.text((x0 + x1) / 2, page.row_y0[r] + _Y_STAGE, name, fontsize=_FS_STAGE, fontweight="bold",
                    ha="center", va="baseline", color="#444444", zorder=1)


def _draw_block(ax, page: _Page, b: int) -> None:
    """A block: a frame (a stack of frames for x N), the shortcut arrow and the sum, the note."""
    blk, geom = page.lay.blocks[b], page.geom
    first, last = blk.items[0], blk.items[-1]
    yc = page.yc_of(first)
    x0, x1 = page.slot_x[first] - 0.05, page.slot_x[last] + geom[last].slot + 0.05
    bottom = yc - max(geom[i].h for i in blk.items) / 2 - 0.06
    top = yc + page.block_top[b]
    for k in ((2, 1) if blk.repeat > 1 else ()):  # the repeated blocks behind the drawn one
        _frame(ax, x0, bottom + 0.045 * k, x1 - x0, top - bottom, 0.05,
               facecolor="white", edgecolor="#9aa3ad", linewidth=0.5, zorder=1)
    _frame(ax, x0, bottom, x1 - x0, top - bottom, 0.05, facecolor="white", edgecolor="#9aa3ad", linewidth=0.6,
           zorder=1)
    note_y = top + (0.09 if blk.repeat > 1 else 0.04)
    if blk.shortcut:
        note_y = _draw_shortcut(ax, page, b, yc, top) + 0.04
    note = [f"x {blk.repeat}"] if blk.repeat > 1 else []
    if blk.shortcut_op:
        note.append(blk.shortcut_op)
    if note:
        ax.text((x0 + x1) / 2, note_y, " · ".join(note), fontsize=_FS_NOTE, ha="center", va="bottom",
                fontweight="bold" if blk.repeat > 1 else "normal", color="#222222", zorder=6)


def _draw_shortcut(ax, page: _Page, b: int, yc: float, top: float) -> float:
    """The shortcut over block ``b``: from its input, over the frame, down into the sum. Returns
    the height of the arrow's top line."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle

    blk = page.lay.blocks[b]
    first, last = blk.items[0], blk.items[-1]
    color, style = _SHORTCUT_STYLE[blk.shortcut]
    xb, xe, ya = page.slot_x[first] - 0.11, page.slot_x[last] + page.geom[last].slot + 0.11, top + 0.16
    ax.add_line(Line2D([xb, xb, xe, xe], [yc, ya, ya, yc + 0.16], color=color, linewidth=0.9,
                       linestyle=style, zorder=4, solid_joinstyle="round",
                       gid=f"shortcut-{blk.shortcut}-{blk.name}"))
    _arrow(ax, (xe, yc + 0.17), (xe, yc + 0.055), color=color, lw=0.9, z=4)
    ax.add_artist(Circle((xb, yc), 0.022, color=color, zorder=4))
    ax.add_artist(Circle((xe, yc), 0.055, facecolor="white", edgecolor="#2b2b2b", linewidth=0.6, zorder=5))
    ax.text(xe, yc, "+", fontsize=6.5, ha="center", va="center_baseline", zorder=6)
    return ya


def _draw_volumes(ax, page: _Page) -> None:
    """Volumes, their labels, and the arrows between them (and from one row to the next)."""
    geom = page.geom
    for r, row in enumerate(page.rows):
        for k, i in enumerate(row):
            it, g = page.lay.items[i], geom[i]
            x, yc = page.vol_x(i), page.yc_of(i)
            _cuboid(ax, x, yc, g, _COLORS[it.kind])
            cx, y0 = page.slot_x[i] + g.slot / 2, page.row_y0[r]
            ax.text(cx, y0 + _Y_SHAPE, it.label, fontsize=_FS_SHAPE, ha="center", va="baseline", zorder=6)
            ax.text(cx, y0 + _Y_OP, it.op, fontsize=_FS_OP, ha="center", va="baseline", color="#555555",
                    fontstyle="italic", zorder=6)
            if k:
                prev = row[k - 1]
                _arrow(ax, (page.vol_x(prev) + geom[prev].width, yc), (x, yc))
        yc = page.row_yc(r)
        if r + 1 < len(page.rows):  # the flow continues on the next row
            last = row[-1]
            _arrow(ax, (page.vol_x(last) + geom[last].width, yc), (page.widths[r] + 0.3, yc))
        if r:
            _arrow(ax, (_MARGIN, yc), (page.vol_x(row[0]), yc))


def _draw_header(ax, hd: _Header, fig_w: float, fig_h: float) -> None:
    """Title and legend (solid: identity; dashed: a shortcut that changes the shape)."""
    from matplotlib.lines import Line2D

    ax.text(_MARGIN, fig_h - 0.3, hd.head, fontsize=11, fontweight="bold", ha="left", va="baseline")
    ax.text(_MARGIN + _text_width(hd.head, 11, "bold") + 0.15, fig_h - 0.3, hd.sub, fontsize=8, ha="left",
            va="baseline", color="#444444")
    x, y = fig_w - _MARGIN, fig_h - 0.3 - (hd.height - _HEADER)
    for k, label in reversed(list(enumerate(hd.legend))):
        x -= _text_width(label, 7)
        ax.text(x, y, label, fontsize=7, ha="left", va="baseline", color="#333333")
        if hd.kinds:
            color, style = _SHORTCUT_STYLE[hd.kinds[k]]
            ax.add_line(Line2D([x - 0.38, x - 0.06], [y + 0.03] * 2, color=color, linewidth=0.9, linestyle=style))
        x -= 0.6
