"""The reproduction command, run as a Colab user would on MVTec AD, on a tiny folder built here."""

import csv
import shutil

import pytest

from cutswap_lib.runs import cutswap_paper as paper_numbers
from cutswap_lib.__main__ import main
from cutswap_lib.data import make_toy_dataset
from cutswap_lib.runs.cutswap_tables import ablation_variants


def test_paper_numbers_match_the_reference_means():
    """Means of Tables I-IV as PAPER-NOTES quotes them (image: CutPaste / ResNet18 / CutSwap)."""
    tables = paper_numbers.TABLES
    assert tables[("mvtec", 0.001)]["mean"][0::2] == (0.928, 0.945, 0.955)
    assert tables[("mvtec", 0.01)]["mean"][0::2] == (0.960, 0.981, 0.980)
    assert tables[("visa", 0.001)]["mean"][0::2] == (0.860, 0.882, 0.881)
    assert tables[("visa", 0.01)]["mean"][1::2] == (0.969, 0.979, 0.979)
    assert len(tables[("mvtec", 0.001)]) == 16 and len(tables[("visa", 0.01)]) == 13
    assert paper_numbers.paper_row("mvtec", 0.001, "screw", "cutswap") == (0.732, 0.832)


def test_ablation_variants_reach_every_table():
    assert list(ablation_variants("k")) == [f"K={k}" for k in range(1, 7)]
    assert ablation_variants("layers")["#16+#30"] == {"layers": [2, 4]}
    assert ablation_variants("method")["sort"] == {"method": "sort"}
    with pytest.raises(ValueError, match="unknown ablation"):
        ablation_variants("lr")


@pytest.fixture(scope="module")
def tiny_mvtec(tmp_path_factory):
    """An MVTec-layout folder with one category named like MVTec's 'bottle' (toy images inside)."""
    tmp = tmp_path_factory.mktemp("mvtec")
    make_toy_dataset(tmp / "gen", "disc", n_train=8, n_test_good=3, n_test_defect=2, image_size=64, seed=0)
    shutil.copytree(tmp / "gen" / "disc", tmp / "mvtec" / "bottle")
    return tmp / "mvtec"


def test_cutswap_table_on_a_tiny_mvtec_folder(tiny_mvtec, tmp_path, capsys):
    code = main(["cutswap-table", "--dataset", "mvtec", "--data-root", str(tiny_mvtec),
                 "--categories", "bottle", "--small", "--epochs", "1", "--image-size", "64", "--seeds", "0",
                 "--results", str(tmp_path), "--device", "cpu", "--no-progress"])
    assert code == 0
    rows = list(csv.DictReader((tmp_path / "cutswap_mvtec.csv").open()))
    assert {(r["method"], float(r["coreset"])) for r in rows} == {
        (m, c) for m in ("cutpaste", "resnet18", "cutswap") for c in (0.001, 0.01)}
    for r in rows:
        assert 0 <= float(r["image_auroc"]) <= 1 and 0 <= float(r["pixel_auroc"]) <= 1
    cutswap = next(r for r in rows if r["method"] == "cutswap" and float(r["coreset"]) == 0.001)
    assert (float(cutswap["paper_image_auroc"]), float(cutswap["paper_pixel_auroc"])) == (1.000, 0.975)
    table = (tmp_path / "cutswap_mvtec.md").read_text()
    assert "CutSwap+PC image" in table and ("(1.000)" in table or "(1.000†)" in table)  # † : other networks
    # checkpoints were written, so a second run resumes instead of training again
    assert list((tmp_path / "work" / "mvtec" / "checkpoints" / "mvtec-all").glob("*/epoch_0000.pt"))


def test_missing_dataset_is_a_clear_error(tmp_path, capsys):
    code = main(["cutswap-table", "--dataset", "visa", "--data-root", str(tmp_path),
                 "--categories", "pcb1", "--results", str(tmp_path / "out"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "pcb1" in err and str(tmp_path) in err and "download_dataset('visa'" in err
