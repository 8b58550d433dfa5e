"""A training run's folder and what lives in it: config, orbax checkpoints and their checksums
(:mod:`.folders`, :mod:`.identity`), the one-writer lock (:mod:`.locks`), TensorBoard event files
(:mod:`.tensorboard`), and the persistent XLA cache every command shares (:mod:`.xla_cache`).

Each public name of the modules is re-exported here."""

from __future__ import annotations

from nas_cli.runs.identity import (  # noqa: F401
    CHECKSUMS,
    PARAMS,
    file_sha256,
    file_hashes,
    combined_hash,
    UNCHECKED_ENV,
    unchecked,
    read_checksums,
    record_step,
    start_record,
    unrecorded_steps,
    damage,
    weights_identity,
    describe,
)
from nas_cli.runs.locks import (  # noqa: F401
    LOCK_FILE,
    locked,
)
from nas_cli.runs.tensorboard import (  # noqa: F401
    TB_DIR,
    EventWriter,
    read_scalars,
)
from nas_cli.runs.xla_cache import (  # noqa: F401
    compilation_cache_dir,
    enable_compilation_cache,
)
from nas_cli.runs.folders import (  # noqa: F401
    CONFIG,
    CHECKPOINT,
    METRICS,
    FINAL,
    make_space,
    load_run_dataset,
    save_checkpoint,
    UNFINISHED,
    discard_unfinished,
    start_checksums,
    intact_step,
    restore_checkpoint,
    Run,
    read_config,
    open_run,
    measured_by,
    space_spec,
)

__all__ = [
    "CHECKPOINT",
    "CHECKSUMS",
    "CONFIG",
    "EventWriter",
    "FINAL",
    "LOCK_FILE",
    "METRICS",
    "PARAMS",
    "Run",
    "TB_DIR",
    "UNCHECKED_ENV",
    "UNFINISHED",
    "combined_hash",
    "compilation_cache_dir",
    "damage",
    "describe",
    "discard_unfinished",
    "enable_compilation_cache",
    "file_hashes",
    "file_sha256",
    "intact_step",
    "load_run_dataset",
    "locked",
    "make_space",
    "measured_by",
    "open_run",
    "read_checksums",
    "read_config",
    "read_scalars",
    "record_step",
    "restore_checkpoint",
    "save_checkpoint",
    "space_spec",
    "start_checksums",
    "start_record",
    "unchecked",
    "unrecorded_steps",
    "weights_identity",
]
