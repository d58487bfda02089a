"""Case studies: each experiment is one function that measures something the papers claim,
writes ``results.json``, its figures and ``report.md`` to a folder, and returns the results.

``run_experiment("identity", out="docs/experiments/identity")`` runs the quick protocol (minutes
at most on a laptop CPU); ``protocol="paper"`` (or ``quick=False``) runs the paper protocol where
one is defined, and an experiment may define others (``"cpu"``, degradation's and bottleneck's longer
run: about an hour on 2 cores).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import ClassicNetsError

PROTOCOLS = ("quick", "cpu", "paper")  # every protocol any experiment defines; quick is everyone's
# name -> (function(out, protocol, **kw) -> results dict, one-line description, its protocols)
_EXPERIMENTS: dict[str, tuple[Callable[..., dict], str, tuple[str, ...]]] = {}


def register_experiment(description: str, paper_protocol: bool = True, more_protocols: tuple[str, ...] = ()):
    """Decorator: the function's name (``run_`` stripped) is the experiment's name; its protocols
    are "quick", "paper" unless ``paper_protocol`` is False, and ``more_protocols``."""

    def decorate(fn: Callable[..., dict]) -> Callable[..., dict]:
        name = fn.__name__.removeprefix("run_")
        _EXPERIMENTS[name] = (fn, description, ("quick", *more_protocols, *(("paper",) if paper_protocol else ())))
        return fn

    return decorate


def _ensure_loaded() -> None:
    from . import bottleneck, degradation, identity, pooling, transfer  # noqa: F401  (registers them)


def list_experiments() -> list[str]:
    """Names of the experiments, sorted."""
    _ensure_loaded()
    return sorted(_EXPERIMENTS)


def describe_experiment(name: str) -> str:
    _ensure_loaded()
    return _lookup(name)[1]


def _lookup(name: str) -> tuple[Callable[..., dict], str, tuple[str, ...]]:
    _ensure_loaded()
    if name not in _EXPERIMENTS:
        raise ClassicNetsError(f"unknown experiment {name!r}: expected one of {', '.join(sorted(_EXPERIMENTS))}")
    return _EXPERIMENTS[name]


def run_experiment(name: str, quick: bool = True, out: str | Path | None = None, protocol: str | None = None,
                   **kw) -> dict:
    """Run experiment ``name`` with ``protocol`` (default: the quick one, or the paper's when
    ``quick=False``) into ``out`` (default ``runs/experiments/<name>``); keyword arguments shrink
    or change it (see each experiment's function). Returns the dict also written to
    ``out/results.json``."""
    fn, _, protocols = _lookup(name)
    protocol = protocol or ("quick" if quick else "paper")
    if protocol not in protocols:
        raise ClassicNetsError(f"experiment {name!r} has no {protocol} protocol: it has "
                               f"{', '.join(protocols)} (--protocol {'|'.join(protocols)})")
    _check_settings(name, fn, kw)
    out = Path(out) if out is not None else Path("runs") / "experiments" / name
    out.mkdir(parents=True, exist_ok=True)
    return fn(out=out, protocol=protocol, **kw)


def _check_settings(name: str, fn: Callable[..., dict], kw: dict) -> None:
    """Name a setting the experiment does not take, and list the ones it does."""
    import inspect

    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return  # the experiment checks its own
    known = [p for p in params if p not in ("out", "protocol")]
    unknown = sorted(set(kw) - set(known))
    if unknown:
        raise ClassicNetsError(f"experiment {name!r} has no setting {', '.join(unknown)}: "
                               f"it takes {', '.join(known)}")
