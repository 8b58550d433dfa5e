"""What a run imported from another tool (`nas import ofa`) adds to a run: its record
(:data:`IMPORTED`), fixed input normalisation, and the synthetic data it opens with when it was
imported without any. Kept apart from nas_cli.importing so that the runs package reads imported runs
without importing the importer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nas_cli.config import NORMALIZATIONS, TrainConfig
from nas_cli.data import Dataset, Split
from predictors.files import read_json

#: the record `nas import ofa` writes into a run it made (source file, its SHA-256, the net, classes)
IMPORTED = "imported.json"
#: images of the synthetic split an imported run without data gets (export's parity check)
SYNTHETIC_IMAGES = 16


def fixed_stats(cfg: TrainConfig, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixed (mean, std) of ``cfg.normalize`` (not "data") for ``channels`` channels."""
    mean, std = NORMALIZATIONS[cfg.normalize]
    return np.asarray(mean, np.float32)[:channels], np.asarray(std, np.float32)[:channels]


def synthetic_dataset(run_dir: Path, cfg: TrainConfig) -> Dataset:
    """What an imported run without data opens with: :data:`SYNTHETIC_IMAGES` seeded uniform-noise
    RGB images at the largest resolution in every split, named "synthetic" (export's parity check
    runs on them; nothing is measured on them)."""
    record = read_json(Path(run_dir) / IMPORTED, "import record", "import the checkpoint again")
    names = tuple(record.get("class_names") or ()) if isinstance(record, dict) else ()
    side = max(cfg.resolutions or (224,))
    rng = np.random.default_rng(cfg.seed)
    split = Split(rng.integers(0, 256, (SYNTHETIC_IMAGES, side, side, 3), dtype=np.uint8),
                  np.zeros(SYNTHETIC_IMAGES, np.int32))
    mean, std = fixed_stats(cfg, 3) if NORMALIZATIONS[cfg.normalize] else (np.full(3, 0.5, np.float32),) * 2
    return Dataset(name="synthetic", train=split, val=split, test=split, class_names=names, mean=mean, std=std)
