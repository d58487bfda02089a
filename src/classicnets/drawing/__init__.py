"""Draw a network the way the lectures draw it: feature maps as volumes, left to right.

    import classicnets
    fig = classicnets.draw("resnet34")            # a matplotlib Figure
    from classicnets.drawing import save
    save(fig, "resnet34.svg")                     # or .png

Each feature map of shape C x H x W is a box whose face is H tall and W deep (drawn receding, in
cabinet projection) and whose thickness along the flow is C. Sizes are compressed so that one
page holds LeNet-5 and VGG-16 alike: the face grows with the square root of H (the largest map of
the model gets the full height) and the thickness with log2 C. Fully connected layers are thin
bars, their height growing with log10 of their width. Under each box: the operation that made it
(``conv 5x5, s1``: kernel, stride) and its shape ``H x W x C``, exactly as
:func:`classicnets.summary_table.summary` writes it.

Where the structure comes from: :func:`layout` runs the real model once, through
:func:`~classicnets.summary_table.summary` (on the meta device for a zoo name, so even ResNet-152 costs
no arithmetic), and reads the modules themselves for kernels and strides. Residual blocks are the
``BasicBlock`` and ``Bottleneck`` modules of :mod:`classicnets.models.resnet`; their shortcut is
drawn as an arrow over the block, solid for the identity, dashed where it changes the shape
(option B's 1x1 projection, option A's zero padding). Plain nets have blocks but no arrows.
Identical consecutive blocks are drawn once, marked ``x N``. Long networks wrap onto several
rows, breaking between stages where they can.

The layout is data (:class:`Layout`: items with ``.label`` and ``.shape``, blocks with
``.repeat`` and ``.shortcut``, stages), so what is drawn can be checked against the summary.

The package has three parts: :mod:`.structure` (the layout, read from the model),
:mod:`.geometry` (sizes, line breaking and placement, in inches) and :mod:`.render` (the
matplotlib artists, and :func:`save`).
"""

from .render import draw, save
from .structure import Block, Item, Layout, Stage, layout

__all__ = ["Block", "Item", "Layout", "Stage", "draw", "layout", "save"]
