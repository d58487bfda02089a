"""Per-model training defaults: the paper's recipe where the paper gives one.

Each recipe is a dict of :class:`~classicnets.train.loop.TrainConfig` fields; the first pattern
that matches the model name wins. Where a dataset needs another budget than the one the recipe
was tuned on, a :data:`DATASET_RECIPES` entry for (model, dataset) is laid over it (papers do
the same: He et al. train their ResNets on CIFAR and ImageNet with different schedules).
Anything the user sets overrides both.
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
    # (benchmarks/results/avx512-bf16/results.md, "What the defaults are made of").
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

# (exact model name, dataset name, settings laid over the model's recipe).
DATASET_RECIPES: list[tuple[str, str, dict]] = [
    # LeNet-5 on Fashion-MNIST (60,000 training images, 9x the embedded digits). The digits
    # recipe (15 epochs of batch 64) reaches 91.2% but first passes 90% at epoch 12, after 44 s
    # on 2 cores. A short one-cycle run of batch 128 (1.2-1.3x faster per image than batch 64)
    # with label smoothing 0.1 and no augmentation is past 90% by its last epoch. Label smoothing
    # is what makes so short a run enough (3 epochs: median 90.26% with it, 89.60% without); a run
    # this short underfits, so augmentation only slows it (flips: 89.86%; +-2 pixel shifts cost
    # 0.7 points at 5 epochs) (benchmarks/results/avx2/lenet_fashion_recipe.md). 3 epochs at lr
    # 0.2 ended at 90.1-90.8% on seeds 0-4, a margin that rounding alone undid: with the native
    # convolutions two of five seeds ended at 89.8%, and at lr 0.2 a seed of a shorter run died
    # (10%). 4 epochs at lr 0.15 end at 90.42-90.85%, past 90% in a median 11.3 s on the AVX-512
    # machine (benchmarks/results/avx512-bf16/lenet_fashion_margin.md). Batch 128 at lr 0.1 is *not*
    # safe on the digits: it nearly diverged there (10% after 3 epochs, seed 0).
    ("lenet5", "fashion-mnist", dict(epochs=4, batch_size=128, lr=0.15, augment="none", label_smoothing=0.1)),
]

FALLBACK = dict(epochs=10, batch_size=128, optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True,
                weight_decay=5e-4, schedule="cosine")


def recipe_for(model_name: str, dataset: str | None = None) -> dict:
    """The default settings for ``model_name``, and for ``dataset`` where it has its own entry."""
    recipe = dict(FALLBACK)
    for pattern, settings in RECIPES:
        if fnmatch.fnmatchcase(model_name, pattern):
            recipe.update(settings)
            break
    for name, data, settings in DATASET_RECIPES:
        if (name, data) == (model_name, dataset):
            recipe.update(settings)
    return recipe
