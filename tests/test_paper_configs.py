"""The papers' configurations, run end to end through the table commands' library path.

``SemiRESTConfig()`` (d_f = 1024, a 1024-channel Swin with 32 heads, windows of 32 tokens every
8) and ``RunSettings()`` (CutSwap: 256 epochs, batch 32 x 5 levels x 3 classes, coresets 0.001
and 0.01) are otherwise exercised by no test. Here each runs unchanged except for what a
2-core CPU needs: 3 training images, 2 iterations / epochs, and SemiREST at 256 px instead of
512 (32 x 32 tokens: one window of 32 per image; at 512 px an iteration trains 36 windows,
minutes on this CPU). The checks are about sizes, records and files, not scores.

The last test runs ``tests/gpu_check.py --cpu-smoke`` (the GPU check at tiny sizes).
"""

import csv
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cutswap_lib import weights
from cutswap_lib.data import load_split, make_toy_dataset
from cutswap_lib.runs import cutswap_tables, semirest_tables
from cutswap_lib.runs.results import settings_fingerprint
from cutswap_lib.semirest.model import SemiREST, SemiRESTConfig
from cutswap_lib.weights import load_checkpoint

SEMIREST_SIZE = 256  # px: 32 x 32 tokens at stride 8, one sliding window of mu = 32


@pytest.fixture(scope="module")
def paper_toy(tmp_path_factory):
    """A toy category with 3 normal training images and 2 + 4 test images."""
    root = tmp_path_factory.mktemp("paper_toy")
    make_toy_dataset(root, "disc", n_train=3, n_test_good=2, n_test_defect=1, image_size=SEMIREST_SIZE, seed=0)
    return root


@pytest.fixture()
def random_wide_resnet(monkeypatch):
    """Make ``choose_backbone("wide_resnet50_2")`` pick WideResNet50-2, whose weights then stay random.

    Offline its ImageNet weights are missing and the library would fall back to Lite0; this
    reports them available, and makes loading them fail fast (random init, with the library's
    warning) so that no machine downloads 270 MB here.
    """
    from cutswap_lib import backbones

    available = weights._availability

    def pretend(name, check_network=True):
        return (True, "test: WideResNet50-2, random init") if name == "wide_resnet50_2" else available(name, check_network)

    real = backbones.imagenet_state_dict

    def no_download(name, progress=True):
        if name == "wide_resnet50_2":
            raise weights.WeightsUnavailableError("test: WideResNet50-2 stays random")
        return real(name, progress)

    monkeypatch.setattr(weights, "_availability", pretend)
    monkeypatch.setattr(backbones, "imagenet_state_dict", no_download)


def _csv(path: Path) -> tuple[list[str], list[dict]]:
    with path.open() as fh:
        reader = csv.DictReader(fh)
        return reader.fieldnames, list(reader)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:test. WideResNet50-2 stays random")
def test_semirest_paper_config_through_the_table(paper_toy, random_wide_resnet, tmp_path, monkeypatch):
    config = dataclasses.replace(SemiRESTConfig(), iterations=2)
    paper = SemiRESTConfig()
    assert (config.mu, config.step, config.embed_dim, config.depth, config.num_heads, config.window) == \
        (paper.mu, paper.step, paper.embed_dim, paper.depth, paper.num_heads, paper.window) == (32, 8, 1024, 4, 32, 8)
    settings = semirest_tables.SemiRunSettings(image_size=SEMIREST_SIZE, config=config)

    trained = []  # every SemiREST the table trains, seen through its public fit
    fit = SemiREST.fit

    def watch(self, *args, **kwargs):
        trained.append(self)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(SemiREST, "fit", watch)
    results = tmp_path / "results"
    rows = semirest_tables.semirest_table("toy", paper_toy, ["disc"], settings, results=results,
                                          setting_names=("unsupervised",), device="cpu", progress=False)

    # the result rows and the CSV
    assert [(r["method"], r["variant"]) for r in rows] == [("patchcore", "paper"), ("semirest", "paper")]
    header, written = _csv(results / "semirest_toy.csv")
    assert header == semirest_tables.COLUMNS and len(written) == 2
    fingerprint = settings_fingerprint(settings)
    for r in written:
        assert r["backbone"] == "wide_resnet50_2" and r["setting"] == "unsupervised" and r["settings"] == fingerprint
        assert r["n_test"] == "6" and r["n_labelled"] == "0"
        for key in ("ap", "pro", "pixel_auroc", "image_auroc"):
            assert 0.0 <= float(r[key]) <= 1.0, (key, r[key])
    assert float(written[1]["train_s"]) > 0 and float(written[1]["predict_s"]) > 0
    assert "SemiREST" in (results / "semirest_toy.md").read_text()

    # the model the table trained: the paper's shapes
    (model,) = trained
    assert model.memory.features.extractor.name == "wide_resnet50_2"
    assert model.memory.features.extractor.weights_loaded == "random"
    assert model.grid == (SEMIREST_SIZE // 8, SEMIREST_SIZE // 8)
    bank = model.memory.memory_bank
    assert bank.shape == (round(0.1 * 3 * 32 * 32), 1024) and bank.dtype == torch.float32  # 10 % coreset, d_f 1024
    assert len(model.history) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in model.history)
    swin = model.model
    assert (swin.in_dim, swin.embed_dim, len(swin.blocks), swin.window) == (1024, 1024, 4, 8)
    assert swin.blocks[0].attn.num_heads == 32
    # the weight average exists, has the Swin's shapes, and has moved away from the last weights
    ema = model.ema.module
    pairs = list(zip(swin.state_dict().values(), ema.state_dict().values()))
    assert [a.shape for a, _ in pairs] == [b.shape for _, b in pairs]
    assert all(torch.isfinite(b).all() for _, b in pairs)
    assert any(not torch.equal(a, b) for a, b in pairs if a.is_floating_point())
    test = load_split(paper_toy, "disc", "test", SEMIREST_SIZE)[0][:1]
    scores, maps = model.predict(test)
    assert scores.shape == (1,) and maps.shape == (1, SEMIREST_SIZE, SEMIREST_SIZE) and maps.dtype == torch.float32


@pytest.fixture(scope="module")
def cutswap_run(paper_toy, tmp_path_factory):
    """``RunSettings()`` with 2 epochs, method cutswap, one seed: (settings, results folder, rows)."""
    settings = dataclasses.replace(cutswap_tables.RunSettings(), epochs=2)
    results = tmp_path_factory.mktemp("cutswap_results")
    rows = cutswap_tables.cutswap_table("toy", paper_toy, ["disc"], settings, results=results, **CUTSWAP_RUN)
    return settings, results, rows


CUTSWAP_RUN = {"methods": ("cutswap",), "device": "cpu", "progress": False}


@pytest.mark.slow
def test_cutswap_paper_settings_through_the_table(cutswap_run):
    paper = cutswap_tables.RunSettings()
    assert (paper.epochs, paper.batch_size, paper.lr, paper.levels, paper.coresets, paper.image_size) == \
        (256, 32, 0.03, "all", (0.001, 0.01), 224)
    settings, results, rows = cutswap_run

    # one row per coreset ratio, every column of the CSV
    header, written = _csv(results / "cutswap_toy.csv")
    assert header == cutswap_tables.COLUMNS
    assert [float(r["coreset"]) for r in written] == [0.001, 0.01] and len(rows) == 2
    for r in written:
        assert r["method"] == "cutswap" and r["epochs"] == "2" and r["image_size"] == "224"
        assert r["train_size"] == "224" and r["init"] == "imagenet" and r["train_per"] == "dataset"
        assert r["encoder"].startswith(("resnet18 / imagenet", "efficientnet_lite0 / imagenet (fallback for resnet18)"))
        assert r["saliency"].startswith(("vgg16 / imagenet", "efficientnet_lite0 / imagenet (fallback for vgg16)"))
        assert r["settings"] == settings_fingerprint(settings) and r["data"] and r["checkpoint"]
        for key in ("image_auroc", "pixel_auroc", "aupro"):
            assert 0.0 <= float(r[key]) <= 1.0

    # the checkpoint folder is named by the fingerprint its checkpoints hold
    fingerprint = written[0]["checkpoint"]
    (folder,) = (results / "work" / "toy" / "checkpoints" / "toy-all").iterdir()
    assert folder.name == f"cutswap_paper_seed0_{fingerprint}"
    # the last epoch's checkpoint (an earlier one only when an epoch took over MIN_CHECKPOINT_SECONDS)
    assert "epoch_0001.pt" in {p.name for p in folder.glob("*.pt")} <= {"epoch_0000.pt", "epoch_0001.pt"}
    state = load_checkpoint(folder / "epoch_0001.pt")
    assert state["fingerprint"] == fingerprint and state["epoch"] == 1 and len(state["history"]) == 2
    config = state["config"]
    assert (config["epochs"], config["batch_size"], config["lr"], config["levels"], config["k"]) == (2, 32, 0.03, "all", 4)
    assert config["patch_size"] == 30 and config["triplets"] == 5 and config["mode"] == "cutswap"
    # 3 images, one step per epoch: 3 images x 5 levels x 3 classes = 45 samples
    assert all(h["accuracy"] * 45 == pytest.approx(round(h["accuracy"] * 45)) for h in state["history"])


@pytest.mark.slow
def test_cutswap_rerun_reuses_the_finished_checkpoint(cutswap_run, paper_toy):
    settings, results, rows = cutswap_run
    again = cutswap_tables.cutswap_table("toy", paper_toy, ["disc"], settings, results=results, **CUTSWAP_RUN)
    assert [r["checkpoint"] for r in again] == [rows[0]["checkpoint"]] * 2
    assert [r["image_auroc"] for r in again] == [r["image_auroc"] for r in rows]
    assert all(r["train_s"] < 0.2 * rows[0]["train_s"] for r in again)


def test_gpu_check_cpu_smoke_prints_its_table():
    script = Path(__file__).with_name("gpu_check.py")
    out = subprocess.run([sys.executable, str(script), "--cpu-smoke"], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = out.stdout.splitlines()
    if not torch.cuda.is_available():
        assert lines[0].startswith("no CUDA device")
    table = [x for x in lines if x.startswith("| ")]
    assert table[0].startswith("| check | sizes | result |")
    checks = {x.split(" | ")[0].lstrip("| ") for x in table[1:]}
    assert {"CUDA tests of the fast suite", "SemiREST inference per image", "SemiREST training (fit)",
            "CutSwap training step", "Swin forward, bfloat16 autocast",
            "PatchCore embedding, bfloat16 autocast"} <= checks
    assert all(x.rstrip().endswith("| ok |") for x in table[2:]), "\n".join(table)
