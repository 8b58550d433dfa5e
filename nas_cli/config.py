"""Training configuration: a frozen dataclass filled from a JSON config file, then CLI flags.

A :class:`TrainConfig` is validated when it is built, so every one that exists is valid: nothing
downstream checks it again.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

from nas_cli.data import DATASETS, DEFAULT_IMAGE_SIZE
from nas_cli.errors import FieldError, UserError
from nas_cli.data.input_pipeline import AUGMENTATIONS
from search_spaces import supernet_space_names

#: training recipes, with what each does per step (help texts are built from these)
RECIPES = {
    "sandwich": "largest + smallest + random subnets per step, in-place distillation",
    "progressive": "OFA: largest, then kernel, depth, width",
}
#: subnet samplers, with what each does
SAMPLERS = {
    "uniform": "every gene uniform",
    "complexity": "bound the FLOPs jump between consecutive samples, ElasticViT",
}
#: input normalisations: "data" the training split's per-channel mean/std, "imagenet" ImageNet's
#: (what Once-for-All's pretrained supernets expect: runs of `nas import ofa` record it)
NORMALIZATIONS = {"data": None, "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}
#: weight-shared layer implementations
KERNELS = ("auto", "xla", "pallas")
#: the largest count any integer setting may hold: JAX and optax count steps in int32
MAX_INT = 2**31 - 1
#: seeds every RNG the tools use accepts (numpy's legacy seeding, pymoo and scikit-learn: 0..2**32-1)
MAX_SEED = 2**32 - 1
#: the largest input side a subnet may be trained at (a 1024 px image is already 3 MB per batch entry)
MAX_SIDE = 1024
#: settings bounded by what can run: an epoch count, subnets per step, a width multiplier
MAX_EPOCHS, MAX_NUM_RANDOM, MAX_WIDTH_MULT = 100_000, 64, 16.0


def in_range(field: str, value, low, high, what: str = "") -> str | None:
    """None when ``low <= value <= high`` (a finite number), else the complaint naming ``{field}``
    (a :class:`nas_cli.errors.FieldError` template)."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{{{field}}} {value} must be a finite number in {low}..{high}{what}"
    if not low <= value <= high:
        return f"{{{field}}} {value} is out of range; use {low}..{high}{what}"
    return None


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; ``config.json`` of a run holds exactly these keys.

    Raises:
      FieldError: (when built) the first value out of range or not among the known names, naming its
        field (the CLI names the flag).
    """

    space: str = "mobilenetv3-tiny"
    dataset: str = "digits"
    data_dir: str | None = None
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    seed: int = 0
    recipe: str = "sandwich"
    num_random: int = 2  # random subnets per step besides the largest and smallest (sandwich rule)
    sampler: str = "uniform"
    max_flops_jump: float = 0.25  # complexity-aware sampler: fraction of the space's FLOPs range
    distill: bool = True  # in-place distillation from the largest subnet
    label_smoothing: float = 0.1
    calib_images: int = 2000  # BatchNorm recalibration images (OFA's default)
    val_fraction: float | None = None  # None: 0.2 for digits (small), 0.1 otherwise
    limit_train: int | None = None
    width_mult: float = 1.0
    resolutions: tuple[int, ...] | None = None  # None: the space's default
    kernels: str = "auto"
    fixed_arch: str | None = None  # train only this architecture, from scratch (a baseline)
    augment: str | None = None  # None: standard for natural images (cifar10, folder, npz), else none
    image_size: int | None = None  # folder datasets: the side images are resized to (None: see below)
    normalize: str = "data"  # see NORMALIZATIONS

    def __post_init__(self) -> None:
        # every check once, in this order: names, then bounds (within what the code can hold and run),
        # then relations between fields, all before any file is written
        supernet_spaces = supernet_space_names()
        checks = [
            (self.space in supernet_spaces,
             f"{{space}} {self.space!r} has no supernet; choose one of: {', '.join(supernet_spaces)}"),
            (self.dataset in DATASETS, f"{{dataset}} {self.dataset!r} is not known; choose one of: {', '.join(DATASETS)}"),
            (self.recipe in RECIPES, f"{{recipe}} {self.recipe!r} must be one of: {', '.join(RECIPES)}"),
            (self.sampler in SAMPLERS, f"{{sampler}} {self.sampler!r} must be one of: {', '.join(SAMPLERS)}"),
            (self.kernels in KERNELS, f"{{kernels}} {self.kernels!r} must be one of: {', '.join(KERNELS)}"),
            (self.normalize in NORMALIZATIONS,
             f"{{normalize}} {self.normalize!r} must be one of: {', '.join(NORMALIZATIONS)}"),
            (self.augment is None or self.augment in AUGMENTATIONS,
             f"{{augment}} {self.augment!r} must be one of: {', '.join(AUGMENTATIONS)}"),
            in_range("epochs", self.epochs, 1, MAX_EPOCHS),
            in_range("batch_size", self.batch_size, 2, MAX_INT, " (BatchNorm needs a batch)"),
            in_range("warmup_epochs", self.warmup_epochs, 0, MAX_EPOCHS),
            in_range("seed", self.seed, 0, MAX_SEED),
            in_range("num_random", self.num_random, 0, MAX_NUM_RANDOM, " (random subnets per step)"),
            in_range("calib_images", self.calib_images, 1, MAX_INT),
            None if self.limit_train is None else in_range(
                "limit_train", self.limit_train, self.batch_size, MAX_INT,
                f" (at least {{batch_size}} {self.batch_size}: a step needs a whole batch; omit it for every image)"),
            in_range("width_mult", self.width_mult, 0.01, MAX_WIDTH_MULT),
            None if self.image_size is None else in_range("image_size", self.image_size, 8, MAX_SIDE),
            *(in_range("resolutions", r, 1, MAX_SIDE, " px") for r in self.resolutions or ()),
            (math.isfinite(self.lr) and self.lr > 0, f"{{lr}} {self.lr} must be a finite number > 0"),
            (math.isfinite(self.weight_decay) and self.weight_decay >= 0,
             f"{{weight_decay}} {self.weight_decay} must be >= 0"),
            (0 < self.max_flops_jump <= 1, f"{{max_flops_jump}} {self.max_flops_jump} must be in (0, 1]"),
            (self.val_fraction is None or 0 < self.val_fraction < 1,
             f"{{val_fraction}} {self.val_fraction} must be in (0, 1)"),
            (0 <= self.label_smoothing < 1, f"{{label_smoothing}} {self.label_smoothing} must be in [0, 1)"),
            (self.calib_images >= self.batch_size,
             f"{{calib_images}} {self.calib_images} must be at least the batch size {self.batch_size}"),
            (self.image_size is None or self.dataset == "folder",
             f"{{image_size}} {self.image_size} applies to {{dataset}} folder only (the other datasets keep their size)"),
        ]
        for check in checks:
            message = check if check is None or isinstance(check, str) else (None if check[0] else check[1])
            if message is not None:
                raise FieldError(message)
        if self.data_dir is not None and self.data_dir.strip():
            # recorded absolute: a run is searched and exported from any working directory
            object.__setattr__(self, "data_dir", os.path.abspath(os.path.expanduser(self.data_dir)))
        if self.val_fraction is None:  # make the dataset's default explicit in config.json
            object.__setattr__(self, "val_fraction", 0.2 if self.dataset == "digits" else 0.1)
        if self.augment is None:  # the dataset's default, explicit in config.json
            object.__setattr__(self, "augment", "standard" if DATASETS.get(self.dataset).natural else "none")
        if self.dataset == "folder" and self.image_size is None:
            object.__setattr__(self, "image_size", max(self.resolutions or (DEFAULT_IMAGE_SIZE,)))

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["resolutions"] is not None:
            d["resolutions"] = list(d["resolutions"])
        return d

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "config") -> "TrainConfig":
        """The config of ``data`` (keys as the fields; ``source`` names it in errors)."""
        check_keys(data, source)
        data = dict(data)
        for name, value in data.items():
            check_type(name, value, source)
        if data.get("resolutions") is not None:
            data["resolutions"] = tuple(data["resolutions"])
        return cls(**data)


#: what each kind of field accepts from JSON (bool is no int here: ``"epochs": true`` is refused)
_KINDS = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
              "a finite number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "tuple[int, ...]": (lambda v: isinstance(v, (list, tuple)) and len(v) > 0
                        and all(isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in v),
                        "a list of positive integers"),
}


def check_type(name: str, value: Any, source: str) -> None:
    """Raises UserError when ``value`` is not of field ``name``'s kind, naming both."""
    field = {f.name: f for f in dataclasses.fields(TrainConfig)}[name]
    kind, _, none = str(field.type).partition(" | ")
    if value is None and none == "None":
        return
    ok, allowed = _KINDS[kind]
    if not ok(value):
        allowed += " or null" if none == "None" else ""
        raise UserError(f"{source}: {name} is {json.dumps(value)}; it must be {allowed}")


def check_keys(data: dict[str, Any], source: str) -> None:
    """Raises UserError if ``data`` holds a key that is no TrainConfig field, listing the fields."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"{source}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The settings of a JSON config file; unknown keys are an error, values are checked with the flags."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--config {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"--config {path} is not UTF-8 text; write it as a JSON object") from None
    except json.JSONDecodeError as e:
        raise UserError(f"--config {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"--config {path} must hold a JSON object of TrainConfig keys")
    check_keys(data, str(path))  # reject unknown keys early
    for name, value in data.items():  # and values of the wrong kind, naming the file
        check_type(name, value, str(path))
    return data


def resume_config(run_config: TrainConfig, config_file: str | Path | None, overrides: dict[str, Any]) -> TrainConfig:
    """``--resume``: the run's own settings, with the settings given again (config file, then flags)
    on top. Whether they differ from the run's is checked once, where the run is resumed
    (:func:`nas_cli.training.train_supernet` refuses a difference, naming both values)."""
    data = run_config.to_json()
    if config_file is not None:
        data.update(load_config_file(config_file))
    data.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_json(data)


def build_config(config_file: str | Path | None, overrides: dict[str, Any]) -> TrainConfig:
    """Defaults, then the config file, then the flags the user actually passed (not None)."""
    data: dict[str, Any] = {}
    if config_file is not None:
        data.update(load_config_file(config_file))
    data.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_json(data)
