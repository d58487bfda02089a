"""The model zoo: one module per family, each registering its builders by name."""

from . import alexnet, lenet, nin, resnet, vgg  # noqa: F401  (imported for registration)
from .base import ClassicNet

__all__ = ["ClassicNet"]
