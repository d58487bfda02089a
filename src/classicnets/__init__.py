"""classicnets: the landmark convolutional networks, exact to their papers.

    import classicnets
    model = classicnets.create_model("resnet56")          # any name in classicnets.list_models()
    print(classicnets.summary(model, (3, 32, 32)))         # shapes, parameters, multiply-adds
    predictor = classicnets.load("runs/lenet5-digits-...")  # a trained checkpoint, ready to predict
    classicnets.draw("resnet34")                          # the network as a figure
"""

from .errors import ClassicNetsError
from .models import ModelCard, create_model, list_models, model_card, register_model
from .version import __version__


def summary(model, input_size, **kwargs):
    """Layer-by-layer table of a model: see :func:`classicnets.summary_table.summary`."""
    from .summary_table import summary as _summary

    return _summary(model, input_size, **kwargs)


def load(checkpoint, device="cpu", fast=False, precision="fp32", normalize=True):
    """A :class:`~classicnets.predict.Predictor` for a trained checkpoint (run directory or file);
    ``fast=True`` serves its fastest CPU inference path, found by a short probe and cached
    (``precision="bf16"`` lets bfloat16 compete where the CPU has it natively);
    ``normalize=False`` gives it images as they are, not read as its dataset made its images."""
    from .predict import load as _load

    return _load(checkpoint, device=device, fast=fast, precision=precision, normalize=normalize)


def draw(model, input_size=None, **kwargs):
    """The network as a picture (a matplotlib Figure): see :func:`classicnets.drawing.draw`."""
    from .drawing import draw as _draw

    return _draw(model, input_size, **kwargs)


def show(checkpoint, image, **kwargs):
    """First-layer filters and per-stage feature maps of a trained model on an image (a list of
    matplotlib Figures): see :func:`classicnets.pictures.show`."""
    from .pictures import show as _show

    return _show(checkpoint, image, **kwargs)


__all__ = [
    "ClassicNetsError",
    "ModelCard",
    "__version__",
    "create_model",
    "draw",
    "list_models",
    "load",
    "model_card",
    "register_model",
    "show",
    "summary",
]
