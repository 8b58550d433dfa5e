"""The NAS-Bench-201 space: canonical strings in the benchmark's format, genomes, errors."""

import numpy as np
import pytest

from search_spaces.base import ArchError, get_space
from search_spaces.nasbench201 import OPS, NASBench201Space

SPACE = NASBench201Space()
EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def test_registered_by_name():
    assert get_space("nas-bench-201").name == "nas-bench-201"


def test_benchmark_string_round_trips():
    cell = SPACE.decode(EXAMPLE)
    assert cell.ops == ("nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "nor_conv_3x3", "skip_connect")
    assert SPACE.encode(cell) == EXAMPLE


def test_every_cell_is_distinct_and_round_trips():
    archs = SPACE.all_archs()
    keys = [SPACE.encode(a) for a in archs]
    assert len(set(keys)) == 5**6 == 15625
    rng = np.random.default_rng(0)
    for i in rng.integers(0, len(archs), 200):
        a = archs[i]
        assert SPACE.decode(keys[i]) == a
        assert SPACE.from_genome(SPACE.to_genome(a)) == a
        assert SPACE.features(a).shape == (30,)


def test_largest_and_smallest_mean_compute():
    assert set(SPACE.largest().ops) == {"nor_conv_3x3"}
    assert set(SPACE.smallest().ops) == {"none"}


@pytest.mark.parametrize("text, needle", [
    (EXAMPLE.replace("avg_pool_3x3", "max_pool"), "max_pool"),
    (EXAMPLE.replace("skip_connect~2", "skip_connect~1"), "skip_connect~1"),
    ("|none~0|+|none~0|", "3"),
    ("|none~0|+|none~0|none~1|none~2|+|none~0|none~1|none~2|", "edges"),
])
def test_invalid_strings_name_the_field(text, needle):
    with pytest.raises(ArchError) as e:
        SPACE.decode(text)
    assert needle in str(e.value)
    if "max_pool" in text:
        assert all(op in str(e.value) for op in OPS)


def test_bad_genome():
    with pytest.raises(ArchError, match="0..4"):
        SPACE.from_genome([0, 0, 0, 0, 0, 7])
