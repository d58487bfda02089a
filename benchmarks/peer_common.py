"""What the peer baselines share: which peers an interpreter has, their jobs' data, their results.

A peer is what a learner of this course would use instead of classicnets: Keras 3 (on TensorFlow
or on JAX) or Flax with optax. Each runs in a process of its own, started by the suite
(``peers.py``) as ``PYTHON benchmarks/peer_keras.py worker JOB`` (or ``peer_flax.py``), and prints
its result as JSON (``common.serve_worker``). Nothing here imports torch or classicnets: the
peers may live in an interpreter of their own (``suite.py --peer-python``). The suite gives a
training job its data as an ``.npz`` of uint8 NHWC arrays (the images classicnets trains on, at
the model's input size), the dataset's mean and std, and the learning rate of every step of
classicnets' own schedule for the same run.

``python benchmarks/peer_common.py worker '{}'`` prints the versions of the peer packages this
interpreter has.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys

import numpy as np

# name -> what it is called in reports, its script, the modules it needs, its environment.
PEERS = {
    "keras-tensorflow": {"title": "Keras 3 on TensorFlow", "script": "peer_keras.py",
                         "needs": ("keras", "tensorflow"), "env": {"KERAS_BACKEND": "tensorflow"}},
    "keras-jax": {"title": "Keras 3 on JAX", "script": "peer_keras.py", "needs": ("keras", "jax"),
                  "env": {"KERAS_BACKEND": "jax"}},
    "flax": {"title": "Flax + optax", "script": "peer_flax.py", "needs": ("flax", "optax", "jax"), "env": {}},
}
# The distributions that provide each module (tensorflow-cpu provides the module tensorflow).
DISTRIBUTIONS = {"keras": ("keras",), "tensorflow": ("tensorflow-cpu", "tensorflow"), "jax": ("jax",),
                 "jaxlib": ("jaxlib",), "flax": ("flax",), "optax": ("optax",)}
INSTALL_HINT = "pip install -c constraints.txt -e '.[bench]'"


def versions() -> dict[str, str | None]:
    """Each peer package's version in this interpreter (None: not installed), without importing it."""
    found = {}
    for module, dists in DISTRIBUTIONS.items():
        found[module] = None
        if importlib.util.find_spec(module) is None:
            continue
        for dist in dists:
            try:
                found[module] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return found


def missing(name: str, have: dict[str, str | None]) -> list[str]:
    """The modules peer ``name`` needs that ``have`` (``versions()``) lacks."""
    return [m for m in PEERS[name]["needs"] if not have.get(m)]


def title(name: str, have: dict | None) -> str:
    """"Keras 3.15.1 on TensorFlow 2.21.0": a peer's name with the versions it ran."""
    v = have or {}
    if name not in PEERS or not all(v.get(m) for m in PEERS[name]["needs"]):
        return PEERS.get(name, {}).get("title", name)
    return {"keras-tensorflow": f"Keras {v.get('keras')} on TensorFlow {v.get('tensorflow')}",
            "keras-jax": f"Keras {v.get('keras')} on JAX {v.get('jax')}",
            "flax": f"Flax {v.get('flax')} + optax {v.get('optax')} (JAX {v.get('jax')})"}.get(name, name)


def load_task(path: str) -> dict:
    """A training job's arrays: float32 NHWC images normalised as classicnets normalises them,
    ((x / 255) - mean) / std per channel, and int labels; all in memory, as the peers' own
    tutorials keep Fashion-MNIST and CIFAR-10."""
    with np.load(path) as f:
        mean = f["mean"].astype(np.float32)
        std = f["std"].astype(np.float32)

        def images(x):
            return ((x.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)

        return {"x_train": images(f["x_train"]), "y_train": f["y_train"].astype(np.int32),
                "x_test": images(f["x_test"]), "y_test": f["y_test"].astype(np.int32),
                "classes": int(f["classes"])}


def torch_bound(fan_in: int) -> float:
    """PyTorch's default initialisation of a convolution or linear layer draws its weights and
    biases from U(-b, b), b = 1/sqrt(fan_in) (kaiming_uniform with a = sqrt(5)): the peers' LeNet-5
    and ResNet-20 classifier start as classicnets' do, so their accuracies compare."""
    return 1.0 / float(np.sqrt(fan_in))


def result(rates: list[float], accuracy: float, have: dict) -> dict:
    """What a training job returns: images/s of each epoch (the last is the steady state: the
    first compiles), the final test accuracy, the versions, this process's peak memory."""
    from common import peak_rss_mb

    return {"images_per_second": rates[-1], "epochs": rates, "test_accuracy": float(accuracy),
            "versions": have, "peak_rss_mb": peak_rss_mb()}


if __name__ == "__main__":
    from common import serve_worker

    serve_worker(sys.argv[1:], lambda job: {"versions": versions(), "python": sys.executable})
