"""A peer baseline: Keras 3, on TensorFlow or on JAX (``KERAS_BACKEND``, which the suite sets).

Written as Keras' own guides teach it: the dataset as in-memory NumPy arrays, a ``Sequential`` or
functional model, ``model.compile`` with an optimizer, a loss and ``metrics=["accuracy"]``, then
``model.fit`` (XLA-compiled by default, ``jit_compile="auto"``) and ``model.evaluate``; inference
with ``keras.applications`` and ``predict_on_batch``. Its best case: no input pipeline to wait on.

What it trains is classicnets' model, layer for layer, with classicnets' recipe:

* ``lenet5``: conv 5x5 (6) - max pool 2 - conv 5x5 (16) - max pool 2 - FC 120 - FC 84 - FC 10, ReLU
  after each but the last, on 32x32 inputs (``classicnets.models.lenet``; it pools before its
  ReLU, the same function). PyTorch's default initialisation (``peer_common.torch_bound``).
* ``resnet20``: He et al.'s CIFAR ResNet-20 as ``classicnets.models.resnet.CifarResNet``: 3x3
  convolutions without bias, batch norm (PyTorch's momentum 0.1 and epsilon 1e-5), option A
  shortcuts (every other pixel, zero channels appended), He-normal (fan-out) initialisation,
  global average pooling, an FC layer; a strided convolution pads one pixel on every side, as
  PyTorch's ``padding=1`` does (Keras' ``"same"`` would pad only after).
* SGD with the recipe's momentum and Nesterov setting, the learning rate of every step of
  classicnets' schedule, weight decay as PyTorch's SGD applies it (L2 on every parameter, biases
  and batch-norm scales included: regularisers of ``weight_decay / 2``), cross-entropy with the
  recipe's label smoothing, batch 128, shuffled every epoch. (Keras' SGD keeps its momentum in
  units of the learning rate, PyTorch's in units of the gradient: the same update at a constant
  rate, a slightly different one while the schedule moves it.)

Run by the suite (``peers.py``): ``python benchmarks/peer_keras.py worker JOB``.
"""

from __future__ import annotations

import statistics
import sys
import time

import keras
import numpy as np
from keras import layers, ops
from peer_common import load_task, result, torch_bound, versions


class PerStep(keras.optimizers.schedules.LearningRateSchedule):
    """The learning rate of each step, from a table (classicnets' schedule, step for step)."""

    def __init__(self, lrs):
        self.lrs = [float(v) for v in lrs]

    def __call__(self, step):
        table = ops.convert_to_tensor(self.lrs, dtype="float32")
        return ops.take(table, ops.minimum(ops.cast(step, "int32"), len(self.lrs) - 1))

    def get_config(self):
        return {"lrs": self.lrs}


class PadShortcut(layers.Layer):
    """Option A: every ``stride``-th pixel, with zero channels appended up to ``filters``."""

    def __init__(self, filters: int, stride: int, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.stride = filters, stride

    def call(self, x):
        x = x[:, ::self.stride, ::self.stride, :]
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, self.filters - x.shape[-1]]])


def _l2(weight_decay: float):
    # PyTorch's SGD adds weight_decay * w to the gradient: the gradient of (weight_decay / 2) * w^2.
    return keras.regularizers.L2(weight_decay / 2) if weight_decay else None


def _torch_init(fan_in: int, weight_decay: float) -> dict:
    b = torch_bound(fan_in)
    return dict(kernel_initializer=keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform"),
                bias_initializer=keras.initializers.RandomUniform(-b, b),
                kernel_regularizer=_l2(weight_decay), bias_regularizer=_l2(weight_decay))


def lenet5(shape, classes: int, weight_decay: float) -> keras.Model:
    c = shape[-1]
    return keras.Sequential([
        keras.Input(shape),
        layers.Conv2D(6, 5, activation="relu", **_torch_init(c * 25, weight_decay)),
        layers.MaxPooling2D(2),
        layers.Conv2D(16, 5, activation="relu", **_torch_init(6 * 25, weight_decay)),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(120, activation="relu", **_torch_init(400, weight_decay)),
        layers.Dense(84, activation="relu", **_torch_init(120, weight_decay)),
        layers.Dense(classes, **_torch_init(84, weight_decay)),
    ])


def resnet20(shape, classes: int, weight_decay: float, n: int = 3) -> keras.Model:
    he = keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")

    def conv(x, filters, stride):
        if stride > 1:  # PyTorch pads 1 on every side; "same" would pad only after
            x = layers.ZeroPadding2D(1)(x)
        return layers.Conv2D(filters, 3, strides=stride, padding="valid" if stride > 1 else "same", use_bias=False,
                             kernel_initializer=he, kernel_regularizer=_l2(weight_decay))(x)

    def bn(x):
        return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, gamma_regularizer=_l2(weight_decay),
                                         beta_regularizer=_l2(weight_decay))(x)

    inputs = keras.Input(shape)
    x = layers.ReLU()(bn(conv(inputs, 16, 1)))
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(n):
            stride = 2 if stage and not block else 1
            y = bn(conv(layers.ReLU()(bn(conv(x, filters, stride))), filters, 1))
            shortcut = PadShortcut(filters, stride)(x) if stride > 1 or x.shape[-1] != filters else x
            x = layers.ReLU()(layers.Add()([y, shortcut]))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(classes, **_torch_init(64, weight_decay))(x))


class EpochTimes(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def train(job: dict) -> dict:
    keras.utils.set_random_seed(job["seed"])
    data = load_task(job["data"])
    x, classes = data["x_train"], data["classes"]
    build = {"lenet5": lenet5, "resnet20": resnet20}[job["model"]]
    model = build(x.shape[1:], classes, job["weight_decay"])
    model.compile(optimizer=keras.optimizers.SGD(PerStep(job["lrs"]), momentum=job["momentum"],
                                                 nesterov=job["nesterov"]),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                            label_smoothing=job["label_smoothing"]),
                  metrics=["accuracy"])
    times = EpochTimes()
    model.fit(x, keras.utils.to_categorical(data["y_train"], classes), batch_size=job["batch"],
              epochs=job["epochs"], shuffle=True, verbose=0, callbacks=[times])
    scores = model.evaluate(data["x_test"], keras.utils.to_categorical(data["y_test"], classes), batch_size=500,
                            verbose=0, return_dict=True)
    return result([len(x) / s for s in times.seconds], scores["accuracy"], versions())


def infer(job: dict) -> dict:
    """``keras.applications`` VGG16 / ResNet50 (random weights, 1000 classes, 224x224x3) on one
    random batch: median images/s of ``samples`` samples, each calls lasting ``min_sample`` s."""
    apps = {"vgg16": keras.applications.VGG16, "resnet50": keras.applications.ResNet50}
    x = np.random.default_rng(0).standard_normal((job["batch"], 224, 224, 3), dtype=np.float32)
    out = {}
    for name in job["models"]:
        keras.utils.set_random_seed(0)
        model = apps[name](weights=None)
        start = time.perf_counter()
        model.predict_on_batch(x)  # compiles
        first = time.perf_counter() - start
        rates = []
        for _ in range(job["samples"]):
            calls, start = 0, time.perf_counter()
            while calls == 0 or time.perf_counter() - start < job["min_sample"]:
                model.predict_on_batch(x)
                calls += 1
            rates.append(calls * len(x) / (time.perf_counter() - start))
        out[name] = {"median_images_per_second": statistics.median(rates), "images_per_second": rates,
                     "first_call_seconds": first}
    return {"models": out, "batch": job["batch"], "versions": versions()}


def run(job: dict) -> dict:
    want = job["peer"].removeprefix("keras-")
    if keras.backend.backend() != want:
        raise SystemExit(f"peer_keras: KERAS_BACKEND gives {keras.backend.backend()}, the job is for {want}")
    if job.get("threads") and want == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(job["threads"])
    return {"train": train, "infer": infer}[job["task"]](job)


if __name__ == "__main__":
    from common import serve_worker

    serve_worker(sys.argv[1:], run)
