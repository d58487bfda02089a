"""A peer baseline: Flax (Linen) with optax, the training step compiled by ``jax.jit``.

Written as Flax's own examples teach it (its MNIST and ImageNet examples): a ``linen`` module, a
``flax.training.train_state.TrainState`` (with the batch-norm statistics beside the parameters),
one ``@jax.jit`` function for the whole step (forward, loss, gradients, optax update), batches
sliced from in-memory NumPy arrays in a new random order every epoch; the last, partial batch is
dropped, as those examples drop it.

Same models and recipe as ``peer_keras.py`` (see there): classicnets' LeNet-5 and ResNet-20 layer
for layer, PyTorch's initialisation and batch-norm settings, and SGD as PyTorch applies it:
``optax.add_decayed_weights`` then ``optax.sgd`` (momentum, Nesterov) is PyTorch's update
formula exactly, at the learning rate of every step of classicnets' schedule. Flax ships no
pretrained-model zoo, so the inference comparison (VGG-16, ResNet-50) leaves it out.

Run by the suite (``peers.py``): ``python benchmarks/peer_flax.py worker JOB``.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from peer_common import load_task, result, torch_bound, versions

TORCH_KERNEL = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")  # U(-1/sqrt(fan_in), ...)
HE_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # kaiming_normal_(mode="fan_out")


def torch_bias(fan_in: int):
    b = torch_bound(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -b, b)


class LeNet5(nn.Module):
    classes: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        c = x.shape[-1]
        x = nn.Conv(6, (5, 5), padding="VALID", kernel_init=TORCH_KERNEL, bias_init=torch_bias(c * 25))(x)
        x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))
        x = nn.Conv(16, (5, 5), padding="VALID", kernel_init=TORCH_KERNEL, bias_init=torch_bias(150))(x)
        x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(120, kernel_init=TORCH_KERNEL, bias_init=torch_bias(400))(x))
        x = nn.relu(nn.Dense(84, kernel_init=TORCH_KERNEL, bias_init=torch_bias(120))(x))
        return nn.Dense(self.classes, kernel_init=TORCH_KERNEL, bias_init=torch_bias(84))(x)


class ResNet20(nn.Module):
    classes: int
    n: int = 3

    @nn.compact
    def __call__(self, x, train: bool = False):
        def conv(x, filters, stride):
            return nn.Conv(filters, (3, 3), strides=stride, padding=((1, 1), (1, 1)), use_bias=False,
                           kernel_init=HE_FAN_OUT)(x)

        def bn(x):  # PyTorch's momentum 0.1 is Flax's 0.9 (the weight of the running value)
            return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x)

        x = nn.relu(bn(conv(x, 16, 1)))
        for stage, filters in enumerate((16, 32, 64)):
            for block in range(self.n):
                stride = 2 if stage and not block else 1
                y = bn(conv(nn.relu(bn(conv(x, filters, stride))), filters, 1))
                if stride > 1 or x.shape[-1] != filters:  # option A: every other pixel, zero channels appended
                    x = x[:, ::stride, ::stride, :]
                    x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, filters - x.shape[-1])))
                x = nn.relu(y + x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.classes, kernel_init=TORCH_KERNEL, bias_init=torch_bias(64))(x)


class TrainState(train_state.TrainState):
    batch_stats: Any


def make_state(job: dict, model: nn.Module, shape) -> TrainState:
    variables = model.init(jax.random.PRNGKey(job["seed"]), jnp.zeros((1, *shape), jnp.float32))
    lrs = jnp.asarray(job["lrs"], jnp.float32)
    schedule = lambda count: lrs[jnp.minimum(count, len(job["lrs"]) - 1)]  # noqa: E731
    tx = optax.chain(optax.add_decayed_weights(job["weight_decay"]),
                     optax.sgd(schedule, momentum=job["momentum"], nesterov=job["nesterov"]))
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             batch_stats=variables.get("batch_stats", {}))


def make_steps(classes: int, label_smoothing: float):
    @jax.jit
    def train_step(state: TrainState, x, y):
        def loss_fn(params):
            logits, updates = state.apply_fn({"params": params, "batch_stats": state.batch_stats}, x, train=True,
                                             mutable=["batch_stats"])
            targets = optax.smooth_labels(jax.nn.one_hot(y, classes), label_smoothing)
            return optax.softmax_cross_entropy(logits, targets).mean(), (logits, updates)

        (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", state.batch_stats))
        return state, loss, jnp.sum(jnp.argmax(logits, -1) == y)

    @jax.jit
    def correct(state: TrainState, x, y):
        logits = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, x, train=False)
        return jnp.sum(jnp.argmax(logits, -1) == y)

    return train_step, correct


def train(job: dict) -> dict:
    data = load_task(job["data"])
    x, y, classes = data["x_train"], data["y_train"], data["classes"]
    model = {"lenet5": LeNet5, "resnet20": ResNet20}[job["model"]](classes)
    state = make_state(job, model, x.shape[1:])
    train_step, correct = make_steps(classes, job["label_smoothing"])
    rng = np.random.default_rng(job["seed"])
    batch, steps = job["batch"], len(x) // job["batch"]
    rates = []
    for _ in range(job["epochs"]):
        start, order = time.perf_counter(), rng.permutation(len(x))
        hits = 0
        for i in range(steps):
            idx = order[i * batch:(i + 1) * batch]
            state, loss, right = train_step(state, x[idx], y[idx])
            hits = hits + right  # stays on the device: no wait for it every step
        jax.block_until_ready((state, hits))
        rates.append(steps * batch / (time.perf_counter() - start))
    xt, yt = data["x_test"], data["y_test"]
    right = sum(int(correct(state, xt[i:i + 500], yt[i:i + 500])) for i in range(0, len(xt), 500))
    return result(rates, right / len(xt), versions())


def run(job: dict) -> dict:
    if job["task"] != "train":
        raise SystemExit(f"peer_flax: no {job['task']!r} job (Flax has no model zoo to infer with)")
    return train(job)


if __name__ == "__main__":
    from common import serve_worker

    serve_worker(sys.argv[1:], run)
