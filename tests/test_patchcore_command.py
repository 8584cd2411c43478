"""``python -m cutswap_lib patchcore`` on a folder of your own: MVTec layout with and without masks,
plain --good / --test folders with and without --masks, saved and reloaded models, bad folders."""

import csv
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cutswap_lib.__main__ import main
from cutswap_lib.data import make_toy_dataset
from cutswap_lib.data.image_lists import MissingMaskWarning, folder_images, mvtec_images
from cutswap_lib.runs import patchcore_folder as pf
from cutswap_lib.viz.maps import show_anomaly_overlay

REPO = Path(__file__).resolve().parents[1]
SETTINGS = pf.FolderSettings(weights="random", image_size=64, coreset_ratio=0.1)
FIT = ["--weights", "random", "--image-size", "64"]
TINY = [*FIT, "--no-progress"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """One toy disc category (6 train, 2 good + 4 defect test images) in every input form."""
    tmp = tmp_path_factory.mktemp("pcf")
    make_toy_dataset(tmp / "mvtec", "disc", n_train=6, n_test_good=2, n_test_defect=1, image_size=64, seed=0)
    disc = tmp / "mvtec" / "disc"
    shutil.copytree(disc, tmp / "nogt" / "disc")
    shutil.rmtree(tmp / "nogt" / "disc" / "ground_truth")
    test, masks = tmp / "plain" / "test", tmp / "plain" / "masks"
    test.mkdir(parents=True)
    masks.mkdir()
    for image in sorted((disc / "test").glob("*/*.png")):
        name = f"{image.parent.name}_{image.stem}"
        shutil.copy(image, test / f"{name}.png")
        mask = disc / "ground_truth" / image.parent.name / f"{image.stem}_mask.png"
        if mask.is_file() and name != "stain_000":  # stain_000 has no mask: counted as normal
            shutil.copy(mask, masks / f"{name}_mask.png")
    Image.open(test / "good_000.png").convert("L").save(test / "good_000.png")  # grey
    Image.open(test / "good_001.png").convert("RGBA").save(test / "good_001.png")  # RGBA
    return {"mvtec": tmp / "mvtec", "nogt": tmp / "nogt", "good": disc / "train" / "good", "test": test,
            "masks": masks, "tmp": tmp}


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def labels_index(test, stem):
    return [item.image.stem for item in test.items].index(stem)


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error:"), err
    return err[0]


# --------------------------------------------------------------------------- the four forms
def test_command_mvtec_with_masks_in_a_subprocess_then_load(folders, tmp_path, capsys):
    results, model = tmp_path / "fit", tmp_path / "disc.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-m", "cutswap_lib", "patchcore", "--data-root", str(folders["mvtec"]),
                           "--categories", "disc", "--results", str(results), "--save", str(model), *TINY],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resnet18 (random init, seed 0)" in done.stdout
    table = [line for line in done.stdout.splitlines() if line.startswith("| disc")]
    assert len(table) == 1 and "n/a" not in table[0]  # image and pixel metrics all there
    rows = read_csv(results / "disc" / "scores.csv")
    assert len(rows) == 6 and set(rows[0]) == {"path", "score", "label"}
    assert sorted(r["label"] for r in rows) == ["0", "0", "1", "1", "1", "1"]
    assert len(list((results / "disc" / "maps").rglob("*.png"))) == 6
    assert (results / "disc" / "maps" / "good" / "000.png").is_file()
    saved = torch.load(model, weights_only=True)  # plain tensors, dicts and strings
    assert saved["backbone"] == "resnet18" and saved["image_size"] == 64 and saved["weights"] == "random"

    # later: score the same test split with the saved model, no refitting, same numbers to the last digit
    assert main(["patchcore", "--data-root", str(folders["mvtec"]), "--categories", "disc", "--load", str(model),
                 "--results", str(tmp_path / "load"), "--no-progress"]) == 0
    assert read_csv(tmp_path / "load" / "disc" / "scores.csv") == rows
    assert "fitted on 6 images" in capsys.readouterr().out


def test_mvtec_without_ground_truth_gives_image_metrics_only(folders, tmp_path):
    train, test = mvtec_images(folders["nogt"], "disc", "train"), mvtec_images(folders["nogt"], "disc", "test")
    assert test.labelled and not test.masked
    row, preds = pf.run_patchcore_folder("disc", test, tmp_path, train=train, settings=SETTINGS, progress=False)
    assert 0 <= row["image_auroc"] <= 1 and math.isnan(row["pixel_auroc"]) and math.isnan(row["aupro"])
    assert preds["masks"] is None and preds["labels"].tolist().count(1) == 4
    assert set(read_csv(tmp_path / "scores.csv")[0]) == {"path", "score", "label"}


def test_plain_folders_without_masks_give_scores_and_maps(folders, tmp_path, capsys):
    assert main(["patchcore", "--good", str(folders["good"]), "--test", str(folders["test"]),
                 "--results", str(tmp_path), "--overlays", "2", *TINY]) == 0
    out = capsys.readouterr().out
    assert "no labels" in out and "| folder |" in out
    rows = read_csv(tmp_path / "folder" / "scores.csv")
    assert len(rows) == 6 and set(rows[0]) == {"path", "score"}  # no label column without labels
    maps = sorted((tmp_path / "folder" / "maps").glob("*.png"))
    top = sorted(rows, key=lambda r: -float(r["score"]))[:2]
    assert [m.name for m in maps] == sorted(Path(r["path"]).name for r in top)  # the two highest scores
    metrics_row = read_csv(tmp_path / "folder" / "metrics.csv")[0]
    assert metrics_row["backbone"] == "resnet18" and metrics_row["weights"] == "random"


def test_plain_folders_with_masks_label_by_mask_and_name_the_missing(folders, tmp_path):
    with pytest.warns(MissingMaskWarning, match="stain_000.png"):
        test = folder_images(folders["test"], folders["masks"])
    labels = {item.image.stem: item.label for item in test.items}
    assert labels["stain_000"] == 0 and labels["good_000"] == 0 and labels["scratch_000"] == 1
    train = folder_images(folders["good"], what="--good folder")
    row, preds = pf.run_patchcore_folder("folder", test, tmp_path, train=train, settings=SETTINGS, progress=False)
    assert all(0 <= row[k] <= 1 for k in ("image_auroc", "pixel_auroc", "pixel_ap", "aupro"))
    assert preds["masks"].shape == (6, 64, 64) and preds["masks"][labels_index(test, "stain_000")].sum() == 0
    assert len(list((tmp_path / "maps").glob("*.png"))) == 6  # grey and RGBA images were read as RGB


def test_saved_and_reloaded_model_give_identical_scores(folders, tmp_path):
    train, test = mvtec_images(folders["mvtec"], "disc", "train"), mvtec_images(folders["mvtec"], "disc", "test")
    fitted = pf.fit_model(train, SETTINGS, progress=False)
    before = pf.score_images(fitted, test, progress=False)
    loaded = pf.load_model(pf.save_model(fitted, tmp_path / "m.pt"), progress=False)
    after = pf.score_images(loaded, test, progress=False)
    assert torch.equal(before["scores"], after["scores"]) and torch.equal(before["maps"], after["maps"])
    assert (loaded.backbone, loaded.layers, loaded.image_size, loaded.n_train) == ("resnet18", ["layer2", "layer3"],
                                                                                   64, 6)


# --------------------------------------------------------------------------- bad input: one line, exit 2
def _bad_cases(f, tmp: Path) -> dict:
    (tmp / "empty").mkdir(exist_ok=True)
    (tmp / "textonly").mkdir(exist_ok=True)
    (tmp / "textonly" / "notes.txt").write_text("no images here")
    (tmp / "notes.pt").write_text("not a model")
    torch.save({"weight": torch.zeros(3)}, tmp / "state.pt")
    half = tmp / "half"
    if not half.exists():
        shutil.copytree(f["mvtec"], half)
        (half / "disc" / "ground_truth" / "chip" / "000_mask.png").unlink()
    good, test = str(f["good"]), str(f["test"])
    cases = {
        "missing data root": (["--data-root", str(tmp / "nowhere")], "nowhere does not exist"),
        "empty data root": (["--data-root", str(tmp / "empty")], "holds no category"),
        "unknown category": (["--data-root", str(f["mvtec"]), "--categories", "screw"], "screw"),
        "good folder without images": (["--good", str(tmp / "textonly"), "--test", test], "textonly has no images"),
        "missing test folder": (["--good", good, "--test", str(tmp / "nowhere")], "nowhere does not exist"),
        "empty masks folder": (["--good", good, "--test", test, "--masks", str(tmp / "empty")], "empty has no images"),
        "mask missing in ground_truth": (["--data-root", str(half)], "chip/000.png"),
        "test without good": (["--test", test], "--good"),
        "masks without test": (["--good", good, "--masks", str(f["masks"])], "--masks needs --test"),
        "both forms": (["--data-root", str(f["mvtec"]), "--good", good, "--test", test], "not both"),
        "load a text file": (["--test", test, "--load", str(tmp / "notes.pt")], "cannot read checkpoint"),
        "load a state dict": (["--test", test, "--load", str(tmp / "state.pt")], "is not a PatchCore model"),
        "load a missing file": (["--test", test, "--load", str(tmp / "gone.pt")], "gone.pt does not exist"),
        "load with fit options": (["--test", test, "--load", str(tmp / "state.pt"), "--backbone", "vgg16"],
                                  "--backbone comes from the model file"),
        "layers of another network": (["--good", good, "--test", test, "--layers", "features.16"], "--layers"),
    }
    return {name: (extra if "--load" in extra else [*FIT, *extra], needle) for name, (extra, needle) in cases.items()}


BAD = ["missing data root", "empty data root", "unknown category", "good folder without images",
       "missing test folder", "empty masks folder", "mask missing in ground_truth", "test without good",
       "masks without test", "both forms", "load a text file", "load a state dict", "load a missing file",
       "load with fit options", "layers of another network"]


@pytest.mark.parametrize("name", BAD)
def test_bad_input_is_one_line_and_exit_2(folders, tmp_path, capsys, name):
    extra, needle = _bad_cases(folders, folders["tmp"])[name]
    assert main(["patchcore", "--results", str(tmp_path / "out"), "--no-progress", *extra]) == 2
    assert needle in one_error_line(capsys)
    assert not list((tmp_path / "out").rglob("*.csv"))  # nothing scored or written


def test_layers_after_the_offline_fallback_are_named(monkeypatch):
    monkeypatch.setattr(pf, "choose_pretrained", lambda name, verbose=True: ("efficientnet_lite0", True))
    with pytest.raises(ValueError, match="runs instead of resnet18"):
        pf.choose_network(pf.FolderSettings(layers=("layer2", "layer3")))


def test_overlay_figure_uses_the_given_scale():
    fig = show_anomaly_overlay(torch.rand(3, 32, 32), torch.rand(8, 8), np.eye(32), title="x", vmin=0, vmax=5)
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(fig.axes) == 3 and images[-1].get_clim() == (0.0, 5.0)  # image, overlay, colour bar
