"""The one table from config fields to the flags that set them, for the CLI's messages.

The configs (:class:`nas_cli.config.TrainConfig`, :class:`nas_cli.search.SearchConfig`) validate what
a user sets and name bad values by field (:class:`nas_cli.errors.FieldError`); the commands print
those messages with the field called by its flag. A field with no flag (set in a ``--config`` file
only, like ``warmup_epochs``) keeps its name.
"""

from __future__ import annotations

#: config field -> the flag that sets it (train-supernet, finetune and search share the names)
FLAGS = {
    # TrainConfig (nas train-supernet)
    "space": "--space", "dataset": "--dataset", "data_dir": "--data-dir", "image_size": "--image-size",
    "augment": "--augment", "epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "seed": "--seed",
    "recipe": "--recipe", "sampler": "--sampler", "num_random": "--num-random", "calib_images": "--calib-images",
    "width_mult": "--width-mult", "limit_train": "--limit-train", "resolutions": "--resolutions",
    "kernels": "--kernels", "config": "--config",
    # nas finetune's own settings (epochs, lr, batch_size and seed are named as above)
    "distill_weight": "--distill-weight",
    # SearchConfig (nas search); the budgets are one field holding one value per metric
    "objectives": "--objectives", "latency_budget": "--latency-budget", "flops_budget": "--flops-budget",
    "params_budget": "--params-budget", "algorithm": "--algorithm", "population": "--population",
    "generations": "--generations", "evaluations": "--evaluations", "predictor": "--predictor",
    "initial": "--initial", "batch": "--batch", "proposal": "--proposal", "features": "--features",
    "pool": "--pool", "explore": "--explore", "latency_runtime": "--latency-runtime",
}
