"""The suite's side of the peers: which are installed, the jobs it gives them, running them.

The peers (``peer_common.PEERS``: Keras 3 on TensorFlow, Keras 3 on JAX, Flax + optax) are an
optional extra, ``pip install -c constraints.txt -e '.[bench]'``, never installed in CI. They run
in ``--peer-python`` (by default this interpreter when it has any of them, else
``.venv-peers/bin/python`` when there is one), each job in a process of its own. A peer that is
not installed is skipped, and the results and the report say so; one that fails is dropped from
the rest of its workload, its error recorded.

A training job trains what classicnets trains in the same round: the same model on the same
images (an ``.npz`` made here from classicnets' own reader, at the model's input size), batch,
epochs, optimiser settings and the learning rate of every step of classicnets' schedule for that
run; it reports the images/s of its last epoch and its final test accuracy. Nobody augments on a
workload the peers train: the peers do not, LeNet-5's Fashion-MNIST recipe does not, and the
ResNet-20 workload turns the recipe's crops and flips off for classicnets and the tutorial loop.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from common import ROOT, call_worker
from peer_common import INSTALL_HINT, PEERS, missing, versions

HERE = Path(__file__).resolve().parent
TRAIN_MODELS = ("lenet5", "resnet20")  # the models the peers build (peer_keras.py, peer_flax.py)
INFER_MODELS, INFER_BATCH = ("vgg16", "resnet50"), 16  # keras.applications has both; Flax has no zoo


def default_python() -> str | None:
    """This interpreter when it has a peer, else ``.venv-peers/bin/python`` when present."""
    have = versions()
    if any(not missing(name, have) for name in PEERS):
        return sys.executable
    venv = ROOT / ".venv-peers" / "bin" / "python"
    return str(venv) if venv.exists() else None


def find_peers(python: str | None, wanted: list[str] | None) -> dict:
    """Which peers run, in which interpreter, at which versions; and those skipped, with why."""
    wanted = list(PEERS) if wanted is None else wanted
    out = {"python": python, "versions": {}, "available": [], "skipped": {}}
    for name in PEERS:
        if name not in wanted:
            out["skipped"][name] = "left out by --peers"
        elif python is None:
            out["skipped"][name] = f"not installed ({INSTALL_HINT}, or --peer-python)"
    if python is None or not wanted:
        return out
    out["versions"] = call_worker(HERE / "peer_common.py", ["{}"], what="peer versions", python=python)["versions"]
    for name in wanted:
        lacks = missing(name, out["versions"])
        if lacks:
            out["skipped"][name] = f"{', '.join(lacks)} not installed in {python} ({INSTALL_HINT})"
        else:
            out["available"].append(name)
    return out


def run_peer(name: str, job: dict, python: str, threads: int | None) -> dict:
    """One job of peer ``name`` in a process of its own; raises RuntimeError with its stderr."""
    spec = PEERS[name]
    env = {**os.environ, **spec["env"], "TF_CPP_MIN_LOG_LEVEL": "2"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return call_worker(HERE / spec["script"], [json.dumps({**job, "peer": name, "threads": threads})], env,
                       what=f"peer {name}", python=python)


def training_job(w: dict, data_dir: str, lr: float, folder: Path, epochs: int) -> dict:
    """A peer's training job for workload ``w``: its data written to ``folder/task.npz`` and
    classicnets' recipe for the same run (``TrainConfig.resolved``, the loop's own schedule)."""
    import numpy as np

    from classicnets.data.pipeline import fit_to_size
    from classicnets.data.sources import load_split
    from classicnets.models import model_card
    from classicnets.train import TrainConfig
    from classicnets.train.loop import _make_schedule  # the learning rate classicnets sets, step for step

    cfg = TrainConfig(model=w["model"], dataset=None if data_dir else w["data"], data_dir=data_dir or None,
                      batch_size=w["batch"], lr=lr, epochs=epochs, train_limit=w["images"],
                      augment=w.get("augment")).resolved()
    if cfg.augment != "none":
        raise SystemExit(f"workload {w['model']} on {w['data']}: classicnets would train with augmentation "
                         f"{cfg.augment!r} and the peers with none; give the workload augment='none'")
    size = tuple(model_card(w["model"]).input_size[1:])
    arrays, stats = {}, {}
    for split, limit in (("train", w["images"]), ("test", None)):
        data = load_split(cfg.dataset, cfg.data_dir, split, size=size, channels=model_card(w["model"]).input_size[0])
        images = fit_to_size(data.images[:limit], size)
        arrays[f"x_{split}"] = images.permute(0, 2, 3, 1).contiguous().numpy()  # NHWC, as Keras and Flax take it
        arrays[f"y_{split}"] = data.labels[:limit].numpy()
        stats = stats or {"mean": np.asarray(data.mean), "std": np.asarray(data.std), "classes": len(data.classes)}
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "task.npz", **arrays, **stats)  # normalised by the training split's statistics
    steps = -(-len(arrays["y_train"]) // cfg.batch_size)
    _, schedule, _ = _make_schedule(cfg, steps)
    return {"task": "train", "model": w["model"], "data": str(folder / "task.npz"), "batch": cfg.batch_size,
            "epochs": epochs, "lrs": [schedule(s) for s in range(steps * epochs)], "momentum": cfg.momentum,
            "nesterov": bool(cfg.nesterov) and cfg.momentum > 0, "weight_decay": cfg.weight_decay,
            "label_smoothing": cfg.label_smoothing or 0.0, "seed": 0}


def inference_section(peers: dict, quick: bool, threads: int | None, log) -> dict:
    """VGG-16 and ResNet-50 at batch 16 in each Keras peer (``keras.applications``, random
    weights), one process per peer, right after ``bench_infer.py`` measured classicnets and ONNX
    Runtime on the same models and batch."""
    out = {"batch": INFER_BATCH, "runs": {}, "skipped": dict(peers["skipped"]), "failed": {}}
    job = {"task": "infer", "models": ["resnet50"] if quick else list(INFER_MODELS),
           "batch": 1 if quick else INFER_BATCH, "samples": 1 if quick else 5, "min_sample": 0.01 if quick else 0.5}
    out["batch"] = job["batch"]
    for name in peers["available"]:
        if not name.startswith("keras-"):
            out["skipped"][name] = "Flax has no model zoo: VGG-16 and ResNet-50 there would be our own code"
            continue
        try:
            out["runs"][name] = run_peer(name, job, peers["python"], threads)["models"]
        except RuntimeError as exc:
            out["failed"][name] = str(exc)[-2000:]
            continue
        log(f"inference {name}: " + ", ".join(f"{m} {r['median_images_per_second']:.1f} img/s"
                                              for m, r in out["runs"][name].items()))
    return out
