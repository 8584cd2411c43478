"""CutSwap tables you can trust: equal budgets, anchors that stay salient, run identity, records, dry runs."""

import csv
import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from cutswap_lib.__main__ import main
from cutswap_lib.cutswap import (ThreeWaySpec, TrainConfig, make_batch, salient_cluster_mask,
                                 sample_placeable_pairs, train_three_way)
from cutswap_lib.data import make_toy_dataset
from cutswap_lib.runs import cutswap_paper


def gen(seed):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- equal budgets
@pytest.mark.parametrize("levels", ["all", "one"])
@pytest.mark.parametrize("layers", [None, [0, 3]])
def test_every_mode_trains_on_the_same_samples_per_step(levels, layers):
    images = torch.rand(4, 3, 64, 64, generator=gen(0))
    maps = torch.rand(4, 5, 64, 64, generator=gen(1))
    swap, _ = make_batch(images, maps, gen(2), ThreeWaySpec(patch_size=12), layers=layers, levels=levels)
    triplets = len(layers) if layers else 5
    paste, _ = make_batch(images, None, gen(2), ThreeWaySpec(mode="cutpaste"), layers=layers, levels=levels,
                          triplets=triplets)
    assert swap.shape == paste.shape
    assert swap.shape[0] == 3 * 4 * (triplets if levels == "all" else 1)


# --------------------------------------------------------------------------- anchors
@pytest.mark.parametrize("tries", [16, 1])
def test_placeable_pairs_stay_in_the_cluster_and_never_move(tries):
    maps = torch.rand(64, 48, 48, generator=gen(3)) ** 3  # (M, H, W) salient clusters of many sizes
    anchors, fallback = sample_placeable_pairs(maps, 10, generator=gen(4), tries=tries)
    cluster = salient_cluster_mask(maps)
    assert not bool(fallback.any())
    for m in range(len(maps)):
        (r0, c0), (r1, c1) = anchors[m].tolist()
        assert cluster[m, r0, c0] and cluster[m, r1, c1]
        assert max(r0, r1) + 10 <= 48 and max(c0, c1) + 10 <= 48  # inside the image
        assert abs(r0 - r1) >= 10 or abs(c0 - c1) >= 10  # disjoint patches


def test_a_cluster_with_no_placeable_pair_falls_back():
    maps = torch.zeros(1, 32, 32)
    maps[0, 30:, 30:] = 1.0  # the only salient pixels sit in the corner: no 8 px patch fits there
    anchors, fallback = sample_placeable_pairs(maps, 8, generator=gen(0))
    assert bool(fallback.all())
    assert bool((anchors >= 30).all())  # the first draw, still from the cluster (pushed later)


# --------------------------------------------------------------------------- training learns
def test_three_way_training_lowers_the_loss_and_beats_chance_on_held_out_negatives(tmp_path):
    from cutswap_lib.data import load_split

    make_toy_dataset(tmp_path, "board", n_train=24, n_test_good=2, n_test_defect=1, image_size=64, seed=0)
    images = load_split(tmp_path, "board", "train", 64)[0]
    fit, held = images[:-4], images[-4:]  # held-out images: their negatives were never seen
    scar = {"width": (2, 6), "length": (8, 16)}
    config = TrainConfig(backbone="resnet18", weights=None, mode="cutpaste", epochs=8, batch_size=8, lr=0.03,
                         scar_width=scar["width"], scar_length=scar["length"], triplets=2, seed=0,
                         checkpoint_every=0)
    model, history = train_three_way(fit, None, config, device="cpu", progress=False)
    assert history[-1]["loss"] < history[0]["loss"] - 0.2
    x, y = make_batch(held, None, gen(99), ThreeWaySpec(mode="cutpaste", scar=scar), triplets=16)
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).float().mean())  # eval mode, as PatchCore uses it
    # Chance is 1/3 over three balanced classes; a guessing model stays below chance + 2.5 binomial standard
    # deviations (0.39 for 192 samples) with probability 0.99. Measured over seeds 0-2, 8 and 12 epochs, one and
    # two threads: 0.48-0.57 (the exact value moves with the thread count, so the bound keeps a margin).
    chance = 1 / 3
    assert accuracy > chance + 2.5 * (chance * (1 - chance) / len(y)) ** 0.5


# --------------------------------------------------------------------------- the paper's numbers
@pytest.mark.parametrize("key", sorted(cutswap_paper.TABLES))
def test_paper_tables_average_to_their_average_rows(key):
    table = cutswap_paper.TABLES[key]
    values = np.array([v for c, v in table.items() if c != "mean"])
    assert np.abs(values.mean(0) - np.array(table["mean"])).max() < 0.0015  # the paper rounds to 3 decimals


# --------------------------------------------------------------------------- runs
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    for seed, name in ((0, "first"), (1, "second")):
        make_toy_dataset(tmp / f"gen{seed}", "disc", n_train=6, n_test_good=2, n_test_defect=1, image_size=64,
                         seed=seed)
        shutil.copytree(tmp / f"gen{seed}" / "disc", tmp / name / "bottle")
    return tmp


def run(root, results, *extra):
    return main(["cutswap-table", "--dataset", "mvtec", "--data-root", str(root), "--categories", "bottle",
                 "--small", "--epochs", "1", "--image-size", "64", "--train-size", "64", "--seeds", "0",
                 "--coresets", "0.5", "--results", str(results), "--device", "cpu", "--no-progress", *extra])


def test_dry_run_plans_every_row_and_trains_nothing(tiny, tmp_path, capsys):
    assert run(tiny / "first", tmp_path, "--dry-run") == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert {(x["method"], x["variant"], x["seed"]) for x in lines} == {
        ("cutpaste", "paper", 0), ("resnet18", "paper", 0), ("cutswap", "paper", 0)}
    for line in lines:
        assert {"category", "method", "variant", "seed", "encoder", "saliency", "checkpoint", "reuse"} <= set(line)
        assert line["category"] == "bottle" and line["n_train"] == 6
    assert not (tmp_path / "work").exists() and not list(tmp_path.glob("*.csv"))


def test_rows_name_the_networks_and_other_data_trains_anew(tiny, tmp_path, capsys):
    assert run(tiny / "first", tmp_path) == 0
    rows = list(csv.DictReader((tmp_path / "cutswap_mvtec.csv").open()))
    for r in rows:
        assert r["encoder"].startswith(("resnet18 / imagenet", "efficientnet_lite0 / imagenet (fallback for "
                                                                "resnet18)"))
        assert (r["saliency"] != "") == (r["method"] == "cutswap") and r["data"] and r["image_size"] == "64"
    folders = sorted(p.name for p in (tmp_path / "work" / "mvtec" / "checkpoints" / "mvtec-all").iterdir())
    assert len(folders) == 2  # cutpaste and cutswap, each named by its fingerprint
    capsys.readouterr()
    # the dry run of the same command now says both checkpoints are reused ...
    assert run(tiny / "first", tmp_path, "--dry-run") == 0
    plan = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert all(x["reuse"] for x in plan if x["method"] != "resnet18")
    # ... and a run on other images in the same results folder trains into new folders
    assert run(tiny / "second", tmp_path) == 0
    after = sorted(p.name for p in (tmp_path / "work" / "mvtec" / "checkpoints" / "mvtec-all").iterdir())
    assert len(after) == 4 and set(folders) < set(after)


def test_resuming_a_folder_made_from_other_data_is_refused(tmp_path):
    images = torch.rand(4, 3, 48, 48, generator=gen(0))
    config = TrainConfig(backbone="resnet18", weights=None, mode="cutpaste", epochs=2, batch_size=4,
                         patch_size=8, scar_width=(1, 3), scar_length=(4, 6), triplets=1)
    train_three_way(images[:, :, :, :], None, TrainConfig(**{**config.__dict__, "epochs": 1}),
                    checkpoint_dir=tmp_path, device="cpu", progress=False, fingerprint="aaaa")
    with pytest.raises(ValueError, match="another configuration|other data"):
        train_three_way(images, None, TrainConfig(**{**config.__dict__, "epochs": 1}), checkpoint_dir=tmp_path,
                        device="cpu", progress=False, fingerprint="bbbb")


def test_the_encoder_is_pretrained_whenever_its_weights_can_be_downloaded(monkeypatch):
    """A first run on Colab: ResNet18's weights are not cached yet but downloadable -> ImageNet, not random."""
    from cutswap_lib import weights as W
    from cutswap_lib.runs import choose_network

    monkeypatch.setattr(W, "_availability", lambda name, check_network=True: (name == "resnet18", "probe"))
    assert choose_network("resnet18") == choose_network("resnet18", "imagenet")
    assert choose_network("resnet18").weights == "imagenet" and choose_network("resnet18").name == "resnet18"
    assert choose_network("resnet18", "random").weights is None
    monkeypatch.setattr(W, "_availability", lambda name, check_network=True: (False, "offline"))
    assert choose_network("resnet18").weights is None  # neither ResNet18 nor Lite0: random init, said so


# --------------------------------------------------------------------------- the untrained baseline's statistics
def _untrained_job(untrained_bn, init="random", seed=3):
    from cutswap_lib.runs import RunSettings, plan_jobs
    from cutswap_lib.runs.cutswap_encoders import NetworkChoice

    settings = RunSettings(init=init, untrained_bn=untrained_bn, batch_size=2, seeds=(seed,), train_size=48)
    encoder = NetworkChoice("resnet18", None if init == "random" else "imagenet", "resnet18")
    job, = plan_jobs("g", ["c"], settings, ["resnet18"], None, encoder, None, 1)
    return job


def test_the_untrained_encoder_takes_its_batchnorm_statistics_from_the_fine_tuning_images():
    from cutswap_lib.cutswap.train import ThreeWayNet

    images = torch.rand(12, 3, 48, 48, generator=gen(1))
    job = _untrained_job("normal")
    assert job.bn_batch == 6 and job.label.endswith("BatchNorm statistics of the normal images")
    extractor, _ = job.build(images, None, progress=False)
    torch.manual_seed(3)
    start = ThreeWayNet("resnet18", None).encoder  # what the job starts from: same seed, same weights
    for (name, a), (_, b) in zip(extractor.net.named_parameters(), start.net.named_parameters()):
        assert torch.equal(a, b), name  # the weights are untouched
    with torch.no_grad():
        conv = start.net.conv1(start.normalize(images))  # (12, 64, 24, 24): what bn1 normalises
    # two equal batches of 6: the cumulative average of their means is the mean over all 12 images
    torch.testing.assert_close(extractor.net.bn1.running_mean, conv.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert torch.equal(start.net.bn1.running_mean, torch.zeros(64)) and not extractor.training

    init, _ = _untrained_job("init").build(images, None, progress=False)
    assert torch.equal(init.net.bn1.running_mean, torch.zeros(64))  # as initialised
    assert torch.equal(init.net.bn1.running_var, torch.ones(64))
    assert _untrained_job("init").label == "resnet18 / random init"
    assert _untrained_job("normal", init="imagenet").bn_batch is None  # ImageNet keeps ImageNet's statistics
    from cutswap_lib.runs import RunSettings

    with pytest.raises(ValueError, match="untrained_bn must be one of"):
        RunSettings(untrained_bn="batch").validate()


def test_the_lr_option_reaches_the_training_and_its_checkpoint_folder(tiny, tmp_path, capsys):
    plans = {}
    for lr in (None, "0.001"):
        assert run(tiny / "first", tmp_path, "--dry-run", *(["--lr", lr] if lr else [])) == 0
        lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
        plans[lr] = {x["method"]: x for x in lines}
    for method in ("cutpaste", "cutswap"):  # a changed learning rate is another run: its own folder
        assert plans[None][method]["checkpoint"] != plans["0.001"][method]["checkpoint"]
        assert plans[None][method]["settings"]["lr"] == 0.03 and plans["0.001"][method]["settings"]["lr"] == 0.001
    assert not (tmp_path / "work").exists()


# --------------------------------------------------------------------------- the stem from random init
def test_the_stem_choice_follows_the_start_and_reaches_the_plan(tiny, tmp_path, capsys):
    from cutswap_lib.runs import RunSettings

    assert RunSettings(init="random").stem_frozen and not RunSettings(init="imagenet").stem_frozen  # "auto"
    assert RunSettings(init="imagenet", stem="freeze").stem_frozen
    assert not RunSettings(init="random", stem="train").stem_frozen
    with pytest.raises(ValueError, match="stem must be"):
        RunSettings(stem="frozen").validate()
    plans = {}
    for stem in (None, "freeze"):
        assert run(tiny / "first", tmp_path, "--dry-run", *(["--stem", stem] if stem else [])) == 0
        lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
        plans[stem] = {x["method"]: x for x in lines}
    for method in ("cutpaste", "cutswap"):  # --small starts from ImageNet: "auto" trains the stem
        assert plans[None][method]["config"]["freeze_stem"] is False
        assert plans["freeze"][method]["config"]["freeze_stem"] is True
        assert plans["freeze"][method]["encoder"].endswith(", stem frozen")
        assert plans[None][method]["checkpoint"] != plans["freeze"][method]["checkpoint"]
    assert plans["freeze"]["resnet18"]["encoder"] == plans[None]["resnet18"]["encoder"]  # nothing to freeze
    assert not (tmp_path / "work").exists()


def test_the_cpu_profile_trains_longer_on_real_images_and_epochs_overrides_it(tiny, tmp_path, capsys):
    """``--cpu``: 40 epochs on the toy data, 80 on any other dataset (RunSettings.cpu says why); ``--epochs`` wins."""
    from cutswap_lib.runs import RunSettings
    from cutswap_lib.runs.cutswap_tables import CPU_EPOCHS

    assert RunSettings.cpu().epochs == CPU_EPOCHS["toy"] == 40
    assert RunSettings.cpu("mvtec").epochs == RunSettings.cpu("visa").epochs == CPU_EPOCHS["real"] == 80
    assert dataclasses.replace(RunSettings.cpu("mvtec"), epochs=40) == RunSettings.cpu()  # nothing else differs
    epochs = {}
    for extra in ((), ("--epochs", "3")):
        code = main(["cutswap-table", "--dataset", "mvtec", "--data-root", str(tiny / "first"), "--categories",
                     "bottle", "--init", "random", "--cpu", "--seeds", "0", "--results", str(tmp_path),
                     "--device", "cpu", "--no-progress", "--dry-run", *extra])
        assert code == 0
        lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
        epochs[extra] = {x["config"]["epochs"] for x in lines if x["method"] != "resnet18"}
    assert epochs == {(): {80}, ("--epochs", "3"): {3}}
    assert not (tmp_path / "work").exists()
