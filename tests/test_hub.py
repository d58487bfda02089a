"""torch.hub.load works on a local checkout for every model."""

import importlib.util
from pathlib import Path

import pytest
import torch

import classicnets

REPO = str(Path(__file__).resolve().parents[1])


def _hubconf():
    # torch.hub.list/help only take GitHub repositories, so read the entry points as hub does:
    # the public callables of hubconf.py.
    spec = importlib.util.spec_from_file_location("hubconf", Path(REPO) / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hub_exposes_every_model():
    hub = _hubconf()
    entries = [n for n in dir(hub) if callable(getattr(hub, n)) and not n.startswith("_")]
    assert sorted(entries) == classicnets.list_models()


@pytest.mark.slow
def test_hub_load_resnet56_passes_builder_arguments():
    model = torch.hub.load(REPO, "resnet56", source="local", num_classes=7, shortcut="B")
    assert isinstance(model, torch.nn.Module)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    reference = classicnets.create_model("resnet56", num_classes=7, shortcut="B")
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in reference.parameters())


def test_hub_docstring_cites_the_paper():
    assert "LeCun" in _hubconf().lenet5.__doc__
