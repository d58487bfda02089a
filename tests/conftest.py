"""Shared fixtures: a tiny trained LeNet-5 run and a way to call the command line in-process.

Training runs here use one thread: on a shared two-core machine that is several times faster
than two contending threads, and it fixes the order of floating-point sums, so two runs with
the same seed are bit-identical.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest
import torch

import classicnets
from classicnets.cli import main
from classicnets.train.loop import TrainConfig, train


def tiny_config(out, **overrides) -> TrainConfig:
    """LeNet-5 on the first 512 embedded digits for one epoch: a run of about a second."""
    values = dict(model="lenet5", epochs=1, train_limit=512, threads=1, quiet=True, out=str(out))
    values.update(overrides)
    return TrainConfig(**values)


@contextlib.contextmanager
def torch_globals_kept():
    """``train`` sets process-wide torch state (threads, deterministic kernels, the global RNG);
    put it back so tests do not leak it into each other."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    fill_memory = torch.utils.deterministic.fill_uninitialized_memory
    rng = torch.get_rng_state()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        torch.utils.deterministic.fill_uninitialized_memory = fill_memory
        torch.set_rng_state(rng)


@pytest.fixture(autouse=True)
def _keep_torch_globals():
    with torch_globals_kept():
        yield


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A run directory of LeNet-5 trained for one epoch on 512 digits. Read-only: tests that
    write into a run use :func:`run_dir`."""
    out = tmp_path_factory.mktemp("lenet5-run")
    with torch_globals_kept():
        train(tiny_config(out))
    return out


@pytest.fixture
def run_dir(trained_run, tmp_path) -> Path:
    """A private copy of :func:`trained_run`."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


@pytest.fixture
def cli(capsys):
    """``cli(*argv) -> (exit code, stdout, stderr)`` of ``classicnets.cli.main``; argparse's own
    exits (``SystemExit``) become exit codes too."""

    def run(*argv) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


def temp_files(directory: Path) -> list[str]:
    """Names of leftover temporary files: ours (``.NAME.tmp-PID``) and safetensors' (``.tmpXXXXXX``)."""
    return sorted(p.name for p in Path(directory).iterdir() if p.name.startswith(".") and ".tmp" in p.name)


# ---- the zoo: models without weights, torchvision's state_dict keys ---------------------------

TORCHVISION_KEYS = Path(__file__).parent / "data" / "torchvision_keys"


def meta_model(name: str, **kwargs) -> torch.nn.Module:
    """A zoo model on the meta device: shapes and counts only, nothing allocated, so even the
    140M-parameter VGGs build instantly."""
    with torch.device("meta"):
        return classicnets.create_model(name, **kwargs)


def torchvision_keys(name: str) -> list[tuple[str, tuple[int, ...]]]:
    """torchvision's state_dict of ``name`` as (key, shape) rows, from tests/data/torchvision_keys."""
    rows = []
    for line in (TORCHVISION_KEYS / f"{name}.txt").read_text().splitlines():
        key, shape = line.split()
        rows.append((key, () if shape == "()" else tuple(int(d) for d in shape.split(","))))
    return rows
