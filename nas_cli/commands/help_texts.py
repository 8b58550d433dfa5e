"""The names and defaults that the help texts show, kept here so that ``nas --help`` (and every
``--help``) never imports JAX: the registries they mirror (search_spaces, nas_cli.config, nas_cli.data,
nas_cli.search, predictors) all import it, which takes seconds.

This is a copy, so tests/nas_cli/test_cli_help.py checks every value here against the live registry or
config dataclass: a new space, dataset or changed default fails that test until it is added here.
Only help texts read this module; what a command actually does comes from the library.
"""

from __future__ import annotations

#: search_spaces.supernet_space_names()
SUPERNET_SPACES = ("mobilenetv3", "mobilenetv3-imagenet", "mobilenetv3-tiny", "resnet", "resnet-imagenet", "resnet-tiny", "vit",
                   "vit-tiny")
#: nas_cli.data.DATASETS, in its order
DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "folder", "npz")
#: nas_cli.data.DEFAULT_IMAGE_SIZE
DEFAULT_IMAGE_SIZE = 32
#: nas_cli.data.input_pipeline.AUGMENTATIONS
AUGMENTATIONS = {
    "none": "the images as they are",
    "standard": "random crop with zero padding of 1/8 of the side (4 px at 32) and horizontal flip, "
                "drawn anew for every image of every epoch",
}
#: nas_cli.config.RECIPES, SAMPLERS, KERNELS
RECIPES = {
    "sandwich": "largest + smallest + random subnets per step, in-place distillation",
    "progressive": "OFA: largest, then kernel, depth, width",
}
SAMPLERS = {
    "uniform": "every gene uniform",
    "complexity": "bound the FLOPs jump between consecutive samples, ElasticViT",
}
KERNELS = ("auto", "xla", "pallas")

#: nas_cli.config.TrainConfig()'s defaults of the options `nas train-supernet` shows
TRAIN_DEFAULTS = {
    "space": "mobilenetv3-tiny",
    "dataset": "digits",
    "epochs": 30,
    "batch_size": 64,
    "lr": 3e-3,
    "seed": 0,
    "recipe": "sandwich",
    "sampler": "uniform",
    "num_random": 2,
    "calib_images": 2000,
    "width_mult": 1.0,
    "kernels": "auto",
}

#: nas_cli.training.finetune's defaults: DEFAULT_DISTILL_WEIGHT, DEFAULT_LR_FRACTION
FINETUNE_DEFAULTS = {"distill_weight": 1.0, "lr_fraction": 1.0}

#: nas_cli.search.ALGORITHMS.names()
ALGORITHMS = ("nsga2", "nsga3", "agemoea2", "moead", "random")
#: predictors.predictor_names()
PREDICTORS = ("ridge", "rbf", "gp", "gbt", "rf", "extra_trees", "mlp", "ensemble", "auto")
#: nas_cli.search.pipeline.DEFAULT_TABLE_SPACE
DEFAULT_TABLE_SPACE = "nas-bench-201"
#: nas_cli.search.SearchConfig()'s defaults of the options `nas search` shows
SEARCH_DEFAULTS = {
    "objectives": ("accuracy", "latency"),
    "algorithm": "nsga2",
    "population": 20,
    "generations": 10,
    "predictor": "auto",
    "batch": 8,
    "seed": 0,
    "proposal": "front",
    "features": "structure",
    "pool": 100000,
    "explore": 0.0,
    "latency_runtime": "jax",
}


def choices(described: dict[str, str]) -> str:
    """``name (what it does), ...`` for a help text."""
    return ", ".join(f"{name} ({what})" for name, what in described.items())
