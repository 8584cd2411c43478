"""The folder writer of ``tests/benchmarks/bench_semirest_real_memory.py``: elpv cells in MVTec layout.

Only the writer runs here (seconds), not the benchmark's ``semirest-table`` runs (minutes each). Needs the
PyPI package ``elpv-dataset`` (a dependency of the course); skipped without it.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from cutswap_lib.data.folder import AnomalyDataset, load_mask

HAVE_ELPV = importlib.util.find_spec("elpv_dataset") is not None
BENCH = Path(__file__).parent / "benchmarks" / "bench_semirest_real_memory.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_semirest_real_memory", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not HAVE_ELPV, reason="the PyPI package elpv-dataset is not installed")
def test_the_written_category_loads_as_mvtec_layout(tmp_path):
    bench = _bench()
    tests = []
    for n in (3, 5):
        folder = bench.write_category(tmp_path, n, f"elpv_{n}")
        assert folder == tmp_path / f"elpv_{n}"
        train = AnomalyDataset(tmp_path, folder.name, "train", image_size=64)
        test = AnomalyDataset(tmp_path, folder.name, "test", image_size=64)
        assert len(train) == n and {s.label for s in train.samples} == {0}
        assert len(test) == 8 and [s.label for s in test.samples].count(1) == 4
        assert test.defect_types == [bench.DEFECT]
        for s in test.samples:
            if s.label:
                assert s.mask is not None and s.mask.is_file()
                assert load_mask(s.mask).mean() == pytest.approx(0.25)  # the placeholder square
        image, mask, label, _ = test[0]  # crack/ sorts before good/
        assert image.shape == (3, 64, 64) and mask.shape == (1, 64, 64) and label == 1
        tests.append([Path(s.image).read_bytes() for s in test.samples])
    assert tests[0] == tests[1]  # the test set does not depend on N
    first = [Path(s.image).read_bytes() for s in AnomalyDataset(tmp_path, "elpv_5", "train").samples]
    assert first[:3] == [Path(s.image).read_bytes() for s in AnomalyDataset(tmp_path, "elpv_3", "train").samples]


def test_the_placeholder_mask_is_a_centred_quarter():
    from cutswap_lib.data.elpv import placeholder_mask

    mask = placeholder_mask(300)
    assert mask.shape == (300, 300) and mask.dtype == np.uint8
    assert (mask == 255).mean() == 0.25 and mask[150, 150] == 255 and mask[0, 0] == 0
