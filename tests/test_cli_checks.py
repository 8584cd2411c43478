"""Every bad argument ends a table run before any work, with one line and exit code 2; results accumulate."""

import csv
import json
import shutil

import pytest
import torch

from cutswap_lib.__main__ import main
from cutswap_lib.data import make_toy_dataset
from cutswap_lib.runs import RunSettings, SemiRunSettings, cutswap_table, semirest_table


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """MVTec layout: 'bottle' and 'cable' (toy discs, 4 anomalous test images each) and 'nodefect'."""
    tmp = tmp_path_factory.mktemp("tiny")
    make_toy_dataset(tmp / "gen", "disc", n_train=6, n_test_good=2, n_test_defect=1, image_size=64, seed=0)
    for name in ("bottle", "cable", "nodefect"):
        shutil.copytree(tmp / "gen" / "disc", tmp / "mvtec" / name)
    for folder in (tmp / "mvtec" / "nodefect" / "test").iterdir():
        if folder.name != "good":
            shutil.rmtree(folder)
    return tmp / "mvtec"


def run(tiny, results, *args):
    command, *rest = args
    return main([command, "--dataset", "mvtec", "--data-root", str(tiny), "--results", str(results),
                 "--no-progress", *rest])


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error:"), err
    return err[0]


CUTSWAP_BAD = {
    "epochs 0": (["--epochs", "0"], "--epochs"),
    "epochs -2": (["--epochs", "-2"], "--epochs"),
    "lr 0": (["--lr", "0"], "--lr"),
    "lr nan": (["--lr", "nan"], "--lr"),
    "coreset 0": (["--coresets", "0"], "--coresets"),
    "coreset 1.5": (["--coresets", "1.5"], "--coresets"),
    "image size 0": (["--image-size", "0"], "--image-size"),
    "train size 0": (["--train-size", "0"], "--train-size"),
    "train size below the patches": (["--image-size", "64", "--train-size", "31"], "--train-size"),
    "ablation without cutswap": (["--ablation", "k", "--methods", "cutpaste"], "--methods"),
    "unknown category": (["--categories", "screw"], "screw"),
    "no defect folders": (["--categories", "nodefect"], "defect"),
    "device that does not exist": (["--device", "nonsense"], "--device"),
}


@pytest.mark.parametrize("name", list(CUTSWAP_BAD))
def test_bad_cutswap_arguments_exit_2_before_any_work(tiny, tmp_path, capsys, name):
    extra, needle = CUTSWAP_BAD[name]
    args = ["cutswap-table", "--categories", "bottle", "--epochs", "1", *extra]
    assert run(tiny, tmp_path, *args) == 2
    assert needle in one_error_line(capsys)
    assert not (tmp_path / "work").exists() and not list(tmp_path.glob("*.csv"))  # nothing trained or written


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_is_one_line(tiny, tmp_path, capsys):
    assert run(tiny, tmp_path, "cutswap-table", "--categories", "bottle", "--device", "cuda") == 2
    assert "no CUDA device" in one_error_line(capsys)


def test_results_that_is_a_file_is_refused(tiny, tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("mine")
    assert run(tiny, target, "cutswap-table", "--categories", "bottle") == 2
    assert "is a file" in one_error_line(capsys) and target.read_text() == "mine"


def _boxes(tiny, category, payload) -> str:
    (tiny / category / "bad_boxes.json").write_text(json.dumps(payload))
    return "bad_boxes.json"


SEMI_BAD = {
    "iterations 0": (["--iterations", "0"], "--iterations"),
    "iterations -3": (["--iterations", "-3"], "--iterations"),
    "labelled 0": (["--labelled", "0", "--settings", "semi"], "--labelled"),
    "coreset 0": (["--coreset-ratio", "0"], "--coreset-ratio"),
    "upsilon 1": (["--upsilon", "1"], "--upsilon"),
    "upsilon -0.1": (["--upsilon", "-0.1"], "--upsilon"),
    "labelled above the anomalous images": (["--labelled", "9"], "4 anomalous"),
    "labelled equal to all of them": (["--labelled", "4"], "leave none"),
    "no defect folders": (["--categories", "nodefect"], "defect"),
}


@pytest.mark.parametrize("name", list(SEMI_BAD))
def test_bad_semirest_arguments_exit_2_before_any_work(tiny, tmp_path, capsys, name):
    extra, needle = SEMI_BAD[name]
    args = ["semirest-table", "--small", "--categories", "bottle", "--iterations", "1", *extra]
    assert run(tiny, tmp_path, *args) == 2
    assert needle in one_error_line(capsys)
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("payload, needle", [
    ({"image_size": [64, 64], "boxes": {"good/000.png": [[1, 1, 5, 5]]}}, "only good images"),
    ({"image_size": [64, 64], "boxes": {"chip/000.png": 3}}, "list of boxes"),
    ({"image_size": [64, 64], "boxes": {"chip/000.png": [["a", 1, 5, 5]]}}, "not a number"),
    ({"image_size": [0, 0], "boxes": {"chip/000.png": [[1, 1, 5, 5]]}}, "image_size"),
])
def test_bad_box_files_exit_2_before_training(tiny, tmp_path, capsys, payload, needle):
    name = _boxes(tiny, "cable", payload)
    assert run(tiny, tmp_path, "semirest-table", "--small", "--categories", "cable", "--iterations", "1",
               "--boxes", name) == 2
    line = one_error_line(capsys)
    assert needle in line and "bad_boxes.json" in line


def test_library_entry_points_name_the_argument(tiny, tmp_path):
    with pytest.raises(ValueError, match="epochs"):
        cutswap_table("mvtec", tiny, ["bottle"], RunSettings(epochs=0), results=tmp_path)
    with pytest.raises(ValueError, match="coreset"):
        cutswap_table("mvtec", tiny, ["bottle"], RunSettings(coresets=(1.5,)), results=tmp_path)
    with pytest.raises(ValueError, match="n_labelled"):
        semirest_table("mvtec", tiny, ["bottle"], SemiRunSettings(n_labelled=0),
                       results=tmp_path, setting_names=("semi",))
    assert not list(tmp_path.iterdir())


def rows_of(path):
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_results_accumulate_over_runs_and_duplicates_are_dropped(tiny, tmp_path, capsys):
    common = ["--methods", "resnet18", "--image-size", "64", "--coresets", "0.5"]
    assert run(tiny, tmp_path, "cutswap-table", "--categories", "bottle", "bottle", "--seeds", "0", "0",
               *common) == 0
    err = capsys.readouterr().err
    assert "--categories repeated values removed" in err and "--seeds repeated values removed" in err
    assert len(rows_of(tmp_path / "cutswap_mvtec.csv")) == 1  # not doubled
    assert run(tiny, tmp_path, "cutswap-table", "--categories", "cable", "--seeds", "0", *common) == 0
    rows = rows_of(tmp_path / "cutswap_mvtec.csv")
    assert sorted(r["category"] for r in rows) == ["bottle", "cable"]  # the first run's row survived
    table = (tmp_path / "cutswap_mvtec.md").read_text()
    assert "| bottle |" in table and "| cable |" in table
    # the same run again replaces its row instead of adding one
    assert run(tiny, tmp_path, "cutswap-table", "--categories", "cable", "--seeds", "0", *common) == 0
    assert sorted(r["category"] for r in rows_of(tmp_path / "cutswap_mvtec.csv")) == ["bottle", "cable"]
    # other settings: kept in the CSV, left out of this run's table (and said so)
    assert run(tiny, tmp_path, "cutswap-table", "--categories", "cable", "--seeds", "0", "--methods",
               "resnet18", "--image-size", "96", "--coresets", "0.5") == 0
    assert len(rows_of(tmp_path / "cutswap_mvtec.csv")) == 3
    table = (tmp_path / "cutswap_mvtec.md").read_text()
    assert "| bottle |" not in table and "2 row(s)" in table
