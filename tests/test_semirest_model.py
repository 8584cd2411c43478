"""SemiREST end to end (Sec. 3.1-3.2): token pools, training, bagged prediction, the reproduction command."""

import copy
import csv
import dataclasses
import shutil

import pytest
import torch

from cutswap_lib import metrics
from cutswap_lib.__main__ import main
from cutswap_lib.data import make_toy_dataset
from cutswap_lib.data import load_foregrounds, load_split
from cutswap_lib.semirest import IGNORE, ResidualMemory, SemiREST, SemiRESTConfig, TokenSwin, focal_loss
from cutswap_lib.runs.semirest_inputs import labelled_split


def _tiny_config(**kw):
    return SemiRESTConfig.cpu(**{"mu": 8, "step": 4, "embed_dim": 16, "num_heads": 2, "window": 4,
                                 "iterations": 4, "synthetic_per_image": 1, "b1": 2, "b2": 2, **kw})


@pytest.fixture(scope="module")
def disc(toy_root):
    train, _, _, paths = load_split(toy_root, "disc", "train", 64)
    test, masks, labels, test_paths = load_split(toy_root, "disc", "test", 64)
    return train, load_foregrounds(paths, 64), test, masks, labels, test_paths


def _model(config, seed=0):
    torch.manual_seed(seed)
    memory = ResidualMemory("resnet18", weights=None, coreset_ratio=0.5, device="cpu", progress=False)
    return SemiREST(memory, config, progress=False)


def test_pools_use_leave_one_image_out_neighbours_and_block_labels(disc):
    train, fg, *_ = disc
    model = _model(_tiny_config()).prepare(train, foreground=fg)
    normal, synthetic = model.pools["normal"], model.pools["synthetic"]
    n, h, w, d = normal.pcf.shape
    assert (n, h, w) == (len(train), 8, 8) and normal.neighbours.shape == (n, h, w, 3)
    source = model.memory.bank_source[normal.neighbours]  # (n, h, w, 3) image of each neighbour
    own = torch.arange(n).view(n, 1, 1, 1)
    assert bool((source != own).all())  # never matched with a patch of its own image
    assert bool((model.memory.bank_source[synthetic.neighbours] != own).all())  # made from image i: skip i
    assert bool((normal.labels == 0).all())
    assert set(synthetic.labels.unique().tolist()) <= {IGNORE, 0, 1} and bool((synthetic.labels == 1).any())


@pytest.mark.parametrize("kept", ["float16", "none"])
def test_pcfs_past_the_budget_are_recomputed_and_give_the_same_bank_and_pool(disc, kept):
    """Past ``pool_budget_gb`` the normal PCFs are never held whole; bank, neighbours and pool stay the same."""
    train = disc[0][:6]
    held = _model(_tiny_config(synthetic_per_image=None)).prepare(train)
    n, h, w, d = held.pools["normal"].pcf.shape
    gib32 = n * h * w * d * 4 / 2**30
    budget = 0.6 * gib32 if kept == "float16" else 0.1 * gib32  # half fits / nothing fits
    streamed = SemiREST(ResidualMemory(held.memory.features.extractor, coreset_ratio=0.5, device="cpu",
                                       progress=False), _tiny_config(synthetic_per_image=None, pool_budget_gb=budget),
                        progress=False)
    passes = []
    patch_features = streamed.memory.features.patch_features
    streamed.memory.features.patch_features = lambda x: passes.append(len(x)) or patch_features(x)
    streamed.prepare(train)
    assert torch.equal(streamed.memory.memory_bank, held.memory.memory_bank)
    assert torch.equal(streamed.memory.bank_source, held.memory.bank_source)
    a, b = streamed.pools["normal"], held.pools["normal"]
    assert torch.equal(a.neighbours, b.neighbours) and torch.equal(a.labels, b.labels)
    if kept == "float16":
        assert a.pcf.dtype == torch.float16 and torch.equal(a.pcf, b.pcf.half()) and a.images is None
    else:
        assert a.pcf is None and a.images is train
    # one batch for the sizes, then the coreset's projection, gathering the bank, the neighbours
    assert sum(passes) == 6 + 3 * len(train)


def test_fit_and_predict_shapes_and_determinism(disc):
    train, fg, test, masks, labels, _ = disc
    maps = []
    for _ in range(2):
        model = _model(_tiny_config(), seed=0)
        history = model.fit(train, foreground=fg)
        assert len(history) == 4 and all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
        scores, m = model.predict(test[:5])
        assert scores.shape == (5,) and m.shape == (5, 64, 64) and bool(torch.isfinite(m).all())
        assert float(m.min()) >= 0 and float(m.max()) <= 1  # bagged probabilities, blurred
        maps.append(m)
    torch.testing.assert_close(maps[0], maps[1])  # same seed, same numbers on the CPU


def test_supervised_needs_real_anomalies(disc):
    train, fg, test, masks, labels, _ = disc
    model = _model(_tiny_config(b3=2))
    with pytest.raises(ValueError, match="anomalous"):
        model.fit(train, foreground=fg)
    bad = labels == 1
    model = _model(_tiny_config(b3=2))
    model.fit(train, foreground=fg, anomalous=(test[bad][:2], masks[bad][:2].unsqueeze(1).float()))
    assert len(model.pools["real"]) == 2
    assert bool((model.pools["real"].labels != 0).any())  # the defects' blocks are not labelled normal


def test_token_swin_learns_that_large_residuals_are_anomalous():
    """Tokens drawn larger inside a blob are anomalous: focal loss + Swin separate them in a few steps."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = TokenSwin(in_dim=8, embed_dim=32, depth=2, num_heads=2, window=4)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)

    def batch():
        x = torch.rand(16, 8, 8, 8, generator=gen) * 0.2
        labels = torch.zeros(16, 8, 8, dtype=torch.long)
        r, c = torch.randint(0, 6, (2, 16), generator=gen)
        for i in range(16):
            labels[i, r[i]:r[i] + 2, c[i]:c[i] + 2] = 1
        return x + labels.unsqueeze(-1) * torch.rand(16, 8, 8, 8, generator=gen), labels

    for _ in range(60):
        x, y = batch()
        loss = focal_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = batch()
    with torch.no_grad():
        p = model.eval().anomaly_probability(x)
    assert metrics.pixel_auroc(y, p) > 0.95


def test_labelled_split_spreads_over_defect_types(disc):
    *_, labels, paths = disc
    chosen = labelled_split(labels, paths, 4, seed=0)
    assert len(chosen) == 4 and bool((labels[chosen] == 1).all())
    assert len({paths[i].split("/")[-2] for i in chosen.tolist()}) == 4  # one per defect type
    assert chosen.tolist() == labelled_split(labels, paths, 4, seed=0).tolist()
    with pytest.raises(ValueError, match="needs"):
        labelled_split(labels, paths, 1000, seed=0)


@pytest.fixture(scope="module")
def tiny_mvtec(tmp_path_factory):
    """An MVTec-layout folder with one category named like MVTec's 'bottle' (toy images inside)."""
    tmp = tmp_path_factory.mktemp("mvtec_semi")
    make_toy_dataset(tmp / "gen", "disc", n_train=8, n_test_good=3, n_test_defect=2, image_size=64, seed=0)
    shutil.copytree(tmp / "gen" / "disc", tmp / "mvtec" / "bottle")
    return tmp / "mvtec"


def test_semirest_table_on_a_tiny_mvtec_folder(tiny_mvtec, tmp_path):
    code = main(["semirest-table", "--dataset", "mvtec", "--data-root", str(tiny_mvtec),
                 "--categories", "bottle", "--small", "--iterations", "2", "--image-size", "64",
                 "--labelled", "2", "--results", str(tmp_path), "--device", "cpu", "--no-progress"])
    assert code == 0
    rows = list(csv.DictReader((tmp_path / "semirest_mvtec.csv").open()))
    assert {(r["setting"], r["method"]) for r in rows} == {
        (s, m) for s in ("unsupervised", "supervised", "semi") for m in ("patchcore", "semirest")}
    for r in rows:
        for key in ("ap", "pro", "pixel_auroc"):
            assert 0 <= float(r[key]) <= 1
    sup = next(r for r in rows if r["setting"] == "supervised" and r["method"] == "semirest")
    unsup = next(r for r in rows if r["setting"] == "unsupervised" and r["method"] == "semirest")
    semi = next(r for r in rows if r["setting"] == "semi" and r["method"] == "semirest" and r["variant"] == "paper")
    before = next(r for r in rows if r["setting"] == "semi" and r["variant"] == "not fine-tuned")
    assert int(sup["n_test"]) == int(unsup["n_test"]) - 2  # the labelled images left the test set
    assert before["method"] == "semirest" and before["n_test"] == semi["n_test"] and before["paper_ap"] == ""
    assert semi["n_test"] == sup["n_test"] and float(semi["paper_ap"]) == pytest.approx(0.936)  # SemiREST semi, bottle, Table 2
    assert float(unsup["paper_ap"]) == pytest.approx(0.941)  # SemiREST, bottle, Table 1
    table = (tmp_path / "semirest_mvtec.md").read_text()
    assert "SemiREST" in table and "PatchCore" in table
    # each row's AP per defect kind: every test folder's kind (the normal 'good' aside), each AP a probability
    kinds = sorted(d.name for d in (tiny_mvtec / "bottle" / "test").iterdir() if d.name != "good")
    for r in rows:
        if r["setting"] != "unsupervised":  # two labelled images left: a kind may have gone from the test set
            continue
        parsed = dict(item.split("=") for item in r["ap_by_kind"].split(";"))
        assert sorted(parsed) == kinds and all(0 <= float(v) <= 1 for v in parsed.values())
    assert "AP by kind" in table.splitlines()[0]  # the Markdown's header names the column


def test_semirest_table_resumes_an_interrupted_category_from_its_training_states(tiny_mvtec, tmp_path,
                                                                                   monkeypatch):
    from cutswap_lib.runs import SemiRunSettings, run_semirest_category
    from cutswap_lib.semirest.model import SemiREST as Model

    settings = dataclasses.replace(SemiRunSettings.small(), image_size=64, n_labelled=2, seeds=(0,))
    settings.config = dataclasses.replace(settings.config, iterations=3)
    steps = []
    original = Model.train_step
    monkeypatch.setattr(Model, "train_step", lambda self, *a, **k: steps.append(1) or original(self, *a, **k))
    states = tmp_path / "states"
    first = run_semirest_category("mvtec", tiny_mvtec, "bottle", settings, setting_names=("unsupervised",),
                                  device="cpu", progress=False, checkpoints=states)
    assert len(steps) == 3 and len(list(states.glob("unsupervised_seed0_*/iteration_000003.pt"))) == 1
    steps.clear()  # a second run (after a disconnect) finds the finished state: no training step, same numbers
    again = run_semirest_category("mvtec", tiny_mvtec, "bottle", settings, setting_names=("unsupervised",),
                                  device="cpu", progress=False, checkpoints=states)
    assert steps == []
    key = lambda r: (r["method"], r["ap"], r["pro"])  # noqa: E731
    assert sorted(map(key, again)) == sorted(map(key, first))


def test_semirest_table_reads_a_box_file(tiny_mvtec, tmp_path, capsys):
    from cutswap_lib.semirest.boxes import box_key, save_boxes

    _, masks, labels, paths = load_split(tiny_mvtec, "bottle", "test", 64)
    named = [i for i in range(len(paths)) if labels[i] == 1][:1]  # one annotated image, drawn at 64 px
    box_file = tiny_mvtec / "bottle" / "my_boxes.json"
    save_boxes(box_file, {box_key(paths[i]): [(0, 0, 64, 64)] for i in named}, (64, 64))
    args = ["semirest-table", "--dataset", "mvtec", "--data-root", str(tiny_mvtec), "--categories", "bottle",
            "--small", "--iterations", "2", "--image-size", "32", "--settings", "supervised", "semi",
            "--boxes", "my_boxes.json", "--results", str(tmp_path), "--device", "cpu", "--no-progress"]
    try:
        assert main(args) == 0
        rows = list(csv.DictReader((tmp_path / "semirest_mvtec.csv").open()))
        assert {r["n_labelled"] for r in rows} == {"1"}  # the file's one image, not --labelled's default 10
        assert {int(r["n_test"]) for r in rows} == {len(paths) - 1}
        assert {r["boxes"] for r in rows if r["setting"] == "semi"} == {"my_boxes.json"}
        assert "my_boxes.json" in (tmp_path / "semirest_mvtec.md").read_text()

        save_boxes(box_file, {"crack/999.png": [(1, 1, 5, 5)]}, (64, 64))  # not in the test set
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "my_boxes.json" in err and "crack/999.png" in err
        box_file.unlink()
        assert main(args) == 2
        assert "does not exist" in capsys.readouterr().err
    finally:
        box_file.unlink(missing_ok=True)  # the folder is shared with the other test of this module


@pytest.mark.parametrize("with_extra", [False, True])
def test_window_chunks_give_the_steps_loss_and_gradient(with_extra):
    """Windows through the Swin in 3 parts: the focal loss over the step's sets, the same gradient."""
    from cutswap_lib.semirest.ema import warmup_ema

    gen = torch.Generator().manual_seed(0)
    windows = torch.randn(7, 8, 8, 16, generator=gen)
    labels = torch.randint(0, 2, (7, 8, 8), generator=gen)
    labels[0, :4] = IGNORE
    labels[1:3] = 0  # parts without anomalous tokens
    torch.manual_seed(0)
    swin = TokenSwin(16, 32, depth=2, num_heads=2, window=4, stochastic_depth=0.0)
    records, grads = [], []
    for chunks in (1, 3):
        model = SemiREST(ResidualMemory("resnet18", weights=None, device="cpu", progress=False),
                         _tiny_config(window_chunks=chunks), progress=False)
        model.model = copy.deepcopy(swin)
        model.ema = warmup_ema(model.model, 0.99, 10.0)
        extra = (lambda m=model: (m.model(windows[:2]).square().mean() * 0.1, {"extra": 1})) if with_extra else None
        records.append(model.train_step(torch.optim.SGD(model.model.parameters(), lr=0.0), windows, labels, extra))
        grads.append([p.grad.clone() for p in model.model.parameters()])
    assert records[0]["loss"] == pytest.approx(records[1]["loss"], rel=1e-5)
    assert records[0]["accuracy"] == records[1]["accuracy"]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
