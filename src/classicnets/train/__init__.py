"""Training: ``train(TrainConfig(...))`` is what ``classicnets train`` runs.

- :mod:`.config`: every setting of a run, each with its help text: the command line is built from it;
- :mod:`.recipes`: what a model trains with on a dataset when a setting is left unset;
- :mod:`.step`: one optimisation step (the loop and the benchmarks call the same one);
- :mod:`.schedules`: learning-rate schedules and the error-driven warm-up;
- :mod:`.loop`: set up, one epoch, finish.
"""

from .config import TrainConfig, add_train_arguments, config_from_args
from .loop import TrainResult, train
from .step import make_optimizer, train_step

__all__ = ["TrainConfig", "TrainResult", "add_train_arguments", "config_from_args", "make_optimizer", "train",
           "train_step"]
