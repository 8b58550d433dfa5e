"""TensorBoard event files beside a run's JSON logs, written with tensorboardX.

``tensorboard --logdir RUN`` shows training (``RUN/tb/``) and every search of the run
(``RUN/search/tb/``, or the search's ``--out``). The JSON logs (metrics.jsonl, search_log.jsonl)
stay the record that the tools read; event files are for looking at.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

#: the event-file folder inside a run or search directory
TB_DIR = "tb"


class EventWriter:
    """Scalars to one TensorBoard log directory.

    Args:
      logdir: created if missing.
      purge_step: on a resumed run, the first step written again: TensorBoard then hides what earlier
        event files hold from that step on (an interrupted epoch or iteration), so curves never fork.
    """

    def __init__(self, logdir: str | Path, purge_step: int | None = None, suffix: str = ""):
        from tensorboardX import SummaryWriter

        Path(logdir).mkdir(parents=True, exist_ok=True)
        # flushed every 10 s: the per-step scalars of a long epoch reach the file while it runs
        self._writer = SummaryWriter(str(logdir), purge_step=purge_step, flush_secs=10, filename_suffix=suffix)

    def scalars(self, step: int, values: Mapping[str, float | None], walltime: float | None = None) -> None:
        """Writes each ``tag: value`` at ``step`` (None values are skipped), stamped ``walltime``
        (seconds since the epoch; default: now)."""
        for tag, value in values.items():
            if value is not None:
                self._writer.add_scalar(tag, float(value), int(step), walltime=walltime)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_scalars(logdir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar under ``logdir`` (recursively) as ``{tag: [(step, value), ...]}`` in file and write
    order, honouring purges the way TensorBoard does (a purge_step drops earlier events from that step
    on). The events are parsed with tensorboardX's protobuf classes; only the TFRecord framing is
    read here (TensorBoard itself, with its own reader, is not a dependency)."""
    from tensorboardX.proto import event_pb2

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(logdir).rglob("events.out.tfevents.*")):
        for raw in _records(path):
            event = event_pb2.Event.FromString(raw)
            if event.HasField("session_log") and event.session_log.status == event.session_log.START:
                for tag in out:  # a restart at this step: drop what came from that step on
                    out[tag] = [(s, v) for s, v in out[tag] if s < event.step]
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    out.setdefault(value.tag, []).append((int(event.step), float(value.simple_value)))
    return out


def _records(path: Path):
    """The payloads of a TFRecord file (length, crc, data, crc), the event-file container."""
    import struct

    data = path.read_bytes()
    pos = 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        start = pos + 12
        yield data[start:start + length]
        pos = start + length + 4
