"""Tests for cutswap_lib.runs.results: the Markdown tables and CSV files the runs write."""

import csv

import numpy as np

from cutswap_lib.runs import format_results_table, write_csv


def test_format_results_table():
    rows = [{"category": "tiles", "image_auroc": 0.91234, "n": 3},
            {"category": "a|b", "image_auroc": np.float32(0.5), "n": np.int64(4)},
            {"category": "nuts", "image_auroc": float("nan")}]
    text = format_results_table(rows, ["category", "image_auroc", "n"])
    lines = text.splitlines()
    assert len(lines) == 2 + len(rows)
    assert lines[0] == "| category | image_auroc | n |"
    assert lines[1] == "|---|---:|---:|"
    assert lines[2] == "| tiles | 0.912 | 3 |"
    assert lines[3] == "| a\\|b | 0.500 | 4 |"
    assert lines[4] == "| nuts | n/a |  |"
    assert format_results_table(rows[:1], floatfmt=".1f").splitlines()[2] == "| tiles | 0.9 | 3 |"


def test_write_csv_keeps_the_column_order_and_ignores_extra_keys(tmp_path):
    path = write_csv([{"b": 2, "a": 1, "extra": 9}], tmp_path / "out" / "rows.csv", ["a", "b"])
    with path.open() as fh:
        assert list(csv.reader(fh)) == [["a", "b"], ["1", "2"]]
