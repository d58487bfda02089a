"""torch.hub entry points: every model of the zoo, by its registry name.

    model = torch.hub.load("path/to/classicnets", "resnet56", source="local")
    model = torch.hub.load("path/to/classicnets", "lenet5", source="local", num_classes=10)

Keyword arguments go to ``classicnets.create_model`` (``num_classes``, ``in_channels``, and the
builder's own, e.g. ``shortcut="B"``). Models come randomly initialised: classicnets publishes
no pretrained weights (torchvision's load into the compatible models, see docs/models.md).
"""

import os
import sys

dependencies = ["torch"]

# The package lives in src/ (a src layout); make it importable when torch.hub loads this file.
_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)

from classicnets.models import create_model as _create_model  # noqa: E402
from classicnets.models import list_models as _list_models  # noqa: E402
from classicnets.models import model_card as _model_card  # noqa: E402


def _entry_point(name):
    def build(**kwargs):
        return _create_model(name, **kwargs)

    card = _model_card(name)
    build.__name__ = name
    build.__doc__ = f"{name}: {card.paper} ({card.reference}). {card.introduced}"
    return build


for _name in _list_models():
    globals()[_name] = _entry_point(_name)
