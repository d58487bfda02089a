"""classicnets: the landmark convolutional networks, exact to their papers."""

from .errors import ClassicNetsError
from .registry import ModelCard, create_model, list_models, model_card, register_model

__version__ = "0.1.0"

__all__ = [
    "ClassicNetsError",
    "ModelCard",
    "__version__",
    "create_model",
    "list_models",
    "model_card",
    "register_model",
]
