"""Per-model training defaults: the paper's recipe where the paper gives one.

Each recipe is a dict of :class:`~classicnets.train.loop.TrainConfig` fields; the first pattern
that matches the model name wins, and anything the user sets overrides it.
"""

from __future__ import annotations

import fnmatch

RECIPES: list[tuple[str, dict]] = [
    # LeNet-5: a short one-cycle run with +-2 pixel shifts (and flips where the data allows).
    # Tuned on the embedded digits (4 seeds, 15 epochs): batch 64 at lr 0.03 reached
    # 98.3-98.7% test accuracy; batch 256 at lr 0.1 diverged on 2 of 4 seeds.
    # LeNet-5 1998's RBF outputs are negative squared distances spanning hundreds, so its
    # gradients are ~10x larger: the same recipe at a tenth of the learning rate.
    ("lenet5_1998", dict(epochs=15, batch_size=64, optimizer="sgd", lr=0.003, momentum=0.9, nesterov=True,
                         weight_decay=0.0, schedule="onecycle", augment="crop:2+flip")),
    ("lenet5*", dict(epochs=15, batch_size=64, optimizer="sgd", lr=0.03, momentum=0.9, nesterov=True,
                     weight_decay=5e-4, schedule="onecycle", augment="crop:2+flip", channels_last=True)),
    # He et al. 2015, section 4.2: SGD 0.1, momentum 0.9, weight decay 1e-4, batch 128, lr/10 at
    # 32k and 48k iterations, stop at 64k (= 50% and 75% of training; ~164 epochs on 50k images).
    # ResNet-110 first trains at 0.01 until its training error is below 80% (about 400 iterations).
    # Channels-last: ResNet-20 trains 1.22x faster in fp32 on a CPU, the same in bf16
    # (benchmarks/results.md, "What the defaults are made of").
    ("resnet110", dict(epochs=164, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9, nesterov=False,
                       weight_decay=1e-4, schedule="step", milestones=(0.5, 0.75), warmup_until_error=0.8,
                       warmup_lr=0.01, augment="crop+flip", channels_last=True)),
    ("resnet[0-9]*", dict(batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9, nesterov=False,
                          weight_decay=1e-4, schedule="step", milestones=(0.5, 0.75), augment="crop+flip",
                          channels_last=True)),
    ("plain*", dict(batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9, nesterov=False,
                    weight_decay=1e-4, schedule="step", milestones=(0.5, 0.75), augment="crop+flip",
                    channels_last=True)),
    # Krizhevsky et al. 2012 (section 5) and Simonyan & Zisserman 2014 (section 3.1):
    # SGD 0.01, momentum 0.9, weight decay 5e-4, lr/10 when validation accuracy stalls.
    ("alexnet*", dict(batch_size=128, optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4,
                      schedule="step", milestones=(0.5, 0.75), augment="crop+flip")),
    ("vgg*", dict(batch_size=128, optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4,
                  schedule="step", milestones=(0.5, 0.75), augment="crop+flip")),
    # Lin et al. 2013 train NiN with SGD and dropout; a cosine schedule is the robust default.
    ("nin", dict(batch_size=128, optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-4,
                 schedule="cosine", augment="crop+flip")),
]

FALLBACK = dict(epochs=10, batch_size=128, optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True,
                weight_decay=5e-4, schedule="cosine")


def recipe_for(model_name: str) -> dict:
    for pattern, recipe in RECIPES:
        if fnmatch.fnmatchcase(model_name, pattern):
            return {**FALLBACK, **recipe}
    return dict(FALLBACK)
