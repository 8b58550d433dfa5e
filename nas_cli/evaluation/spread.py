"""Subnet measurements spread over the processes of a multi-host search.

Process 0 runs the search (the ask/tell loop, latency, every file) and, for each batch of subnets
to measure, hands their arch strings to every process; process ``p`` of ``P`` measures subnets
``p, p + P, ...`` of the batch on its own devices and the values are gathered back on process 0.
The other processes only serve: they run no search of their own, so nothing they compute (a timing,
a predictor's float rounding on other hardware) can make their searches drift apart from process
0's, and they write nothing. Each value is measured exactly as one process measures it, so the
search's results are those of one process; a batch of N subnets takes about 1/P of the time.

The messages go through :mod:`nas_cli.distributed` (JAX's own collectives).
"""

from __future__ import annotations

from typing import Callable, Sequence

from nas_cli import distributed as dist
from nas_cli.distributed import DistributedError
from nas_cli.evaluation.base import Wrapping


def share(keys: Sequence[str], index: int, count: int) -> list[str]:
    """Process ``index``'s subnets of a batch: every ``count``-th from its own index on."""
    return list(keys[index::count])


def merge(answers: Sequence[Sequence[float]], n: int) -> list[float]:
    """The batch's ``n`` values in batch order from each process's values of its :func:`share`."""
    count = len(answers)
    out = [0.0] * n
    for p, values in enumerate(answers):
        assert len(values) == len(range(p, n, count)), (p, len(values), n)
        for i, v in zip(range(p, n, count), values):
            out[i] = v
    return out


class SpreadMeasurer:
    """Measures batches of subnets (arch strings) over every process: :meth:`measure` and
    :meth:`stop` on process 0, :meth:`serve` on each other process, until process 0 stops.

    Args:
      measure: one subnet's value on this process's devices (the same function on every process).
    """

    def __init__(self, measure: Callable[[str], float]):
        self._measure = measure
        self.index, self.count = dist.process_index(), dist.process_count()
        self.measured = 0  # subnets this process measured

    def _mine(self, keys: Sequence[str]) -> tuple[dict, BaseException | None]:
        """This process's answer for a batch: its values, or the error that stopped it (Ctrl-C too:
        the answer is still sent, so that no partner waits for it for ever)."""
        try:
            values = [float(self._measure(k)) for k in share(keys, self.index, self.count)]
        except BaseException as e:  # noqa: BLE001 - told to process 0, which stops every process with it
            return {"error": dist.describe(e)}, e
        self.measured += len(values)
        return {"values": values}, None

    def measure(self, keys: Sequence[str]) -> list[float]:
        """Process 0: the values of ``keys``, each measured by one process.

        Raises:
          DistributedError: naming the process whose measurement failed (process 0's own error
            as it is).
        """
        assert self.index == 0, "only process 0 hands out subnets"
        keys = list(keys)
        dist.broadcast_json({"measure": keys})
        answer, error = self._mine(keys)
        answers = dist.gather_json(answer)
        if error is not None:
            raise error
        for p, a in enumerate(answers):
            if "error" in a:
                raise DistributedError(f"process {p} could not measure its share of {len(keys)} subnets: {a['error']}")
        return merge([a["values"] for a in answers], len(keys))

    def stop(self, error: str | None = None) -> None:
        """Process 0: ends every other process's :meth:`serve` (with ``error``: process 0 failed)."""
        dist.broadcast_json({"stop": True, "error": error})

    def serve(self) -> int:
        """Every process but 0: measures its share of each batch until process 0 stops; returns how
        many subnets this process measured.

        Raises:
          DistributedError: process 0 stopped with an error (its message).
        """
        assert self.index != 0, "process 0 hands out subnets"
        while True:
            message = dist.broadcast_json(None)
            if "stop" in message:
                if message.get("error"):
                    raise DistributedError(f"process 0 stopped the search: {message['error']}")
                return self.measured
            dist.gather_json(self._mine(message["measure"])[0])


class SpreadEvaluator(Wrapping):
    """A training run's evaluator (nas_cli.evaluation.supernet.RunEvaluator) on process 0 of a multi-process
    search: the accuracies a batch still lacks are measured over every process by ``spread``, one
    subnet per process at a time, and kept in the run's evaluator; the rest (latency, FLOPs, the
    files) is the run evaluator's own."""

    def __init__(self, inner, spread: SpreadMeasurer):
        super().__init__(inner)
        self.spread = spread

    @property
    def together(self) -> int:
        """How many new subnets :meth:`evaluate` measures best in one call: one per process."""
        return self.spread.count

    def evaluate(self, archs):
        todo = list(dict.fromkeys(k for k in map(self.space.encode, archs) if not self.inner.knows_accuracy(k)))
        if todo:
            for key, acc in zip(todo, self.spread.measure(todo)):
                self.inner.remember_accuracy(key, acc)
        return self.inner.evaluate(archs)
