"""Checkpoints of the MixMatch fine-tune: an interrupted fine-tune resumes to the same model; foreign folders are refused."""

import dataclasses
import os
import shutil
import socket

import pytest
import torch

from cutswap_lib.data import load_foregrounds, load_split, make_toy_dataset
from cutswap_lib.files import FolderLock, FolderLockedError
from cutswap_lib.semirest import ResidualMemory, SemiREST, SemiRESTConfig
from cutswap_lib.semirest.boxes import box_pixel_labels, boxes_from_mask
from cutswap_lib.semirest.checkpoints import newest_training_state, state_path
from cutswap_lib.semirest.mixmatch import MixMatchConfig
from cutswap_lib.semirest.semi import finetune_with_boxes, semi_copy


class Disconnect(Exception):
    """The Colab session ends in the middle of the fine-tune."""


def _mix(**kw):  # token dropout on (the default): every generator is drawn from in every iteration
    return MixMatchConfig(**{"iterations": 6, "ramp_steps": 1, "b1": 1, "b2": 1, "b3": 1, **kw})


@pytest.fixture(scope="module")
def fitted(toy_root):
    """A fitted tiny model (fresh synthetic anomalies: its own generator is drawn from) and two boxed images."""
    train, _, _, paths = load_split(toy_root, "disc", "train", 64)
    test, masks, labels, _ = load_split(toy_root, "disc", "test", 64)
    torch.manual_seed(0)
    memory = ResidualMemory("resnet18", weights=None, coreset_ratio=0.5, device="cpu", progress=False)
    cfg = SemiRESTConfig.cpu(mu=8, step=4, embed_dim=16, num_heads=2, window=4, iterations=2,
                             synthetic_per_image=None, b1=2, b2=2)
    model = SemiREST(memory, cfg, progress=False)
    model.fit(train[:6], foreground=load_foregrounds(paths[:6], 64))
    bad = (labels == 1).nonzero()[:2, 0]
    pixel = torch.stack([box_pixel_labels(boxes_from_mask(masks[i]), (64, 64)) for i in bad.tolist()])
    return model, model._synthetic_gen.get_state(), (test[bad], pixel)


def _copy(fitted):
    """What a session starts the fine-tune from: a copy of the fitted model, its generators as after ``fit``."""
    model, synthetic_state, _ = fitted
    model._synthetic_gen.set_state(synthetic_state)  # as after fit; semi_copy starts each copy from there
    tuned = semi_copy(model)
    torch.manual_seed(0)
    return tuned


def test_each_semi_copy_draws_its_own_synthetic_anomalies_from_the_fitted_models_state(fitted):
    model, synthetic_state, _ = fitted
    model._synthetic_gen.set_state(synthetic_state)
    first, second = semi_copy(model), semi_copy(model)
    assert first._synthetic_gen is not model._synthetic_gen and first._synthetic_gen is not second._synthetic_gen
    drawn = first.fresh_synthetic(2)  # the first fine-tune draws anomalies ...
    assert torch.equal(model._synthetic_gen.get_state(), synthetic_state)  # ... the fitted model's stays put
    torch.testing.assert_close(second.fresh_synthetic(2).labels, drawn.labels)  # the second draws the same


def _cut_after(model, steps, folder):
    """Let ``model`` take ``steps`` training steps (with ``folder`` locked), then "disconnect"."""
    real, taken = model.train_step, []

    def step(*args, **kwargs):
        if len(taken) == steps:
            raise Disconnect
        assert (folder / FolderLock.NAME).exists(), "the folder is locked while the fine-tune runs"
        taken.append(1)
        return real(*args, **kwargs)
    model.train_step = step


@pytest.fixture(scope="module")
def straight(fitted):
    """The uninterrupted fine-tune of 6 iterations, no checkpoints."""
    model = _copy(fitted)
    finetune_with_boxes(model, *fitted[2], _mix(), progress=False)
    return model


def _same_model(a, b):
    for name, part in (("Swin", lambda m: m.model), ("weight average", lambda m: m.ema)):
        for key, value in part(a).state_dict().items():
            assert torch.equal(part(b).state_dict()[key], value), f"{name} {key}"


def _names(folder):
    return sorted(p.name for p in folder.glob("*.pt"))


def test_an_interrupted_fine_tune_resumes_to_the_losses_and_weights_of_an_uninterrupted_one(fitted, straight,
                                                                                           tmp_path):
    first = _copy(fitted)  # "disconnected" after 4 of 6 iterations: states at 2 and 4 on disk
    _cut_after(first, 4, tmp_path)
    (tmp_path / "iteration_000002.pt").write_bytes(b"fit's state: not the fine-tune's, never pruned by it")
    with pytest.raises(Disconnect):
        finetune_with_boxes(first, *fitted[2], _mix(), progress=False, checkpoint_dir=tmp_path, checkpoint_every=2,
                            fingerprint="f")
    assert _names(tmp_path) == ["finetune_000002.pt", "finetune_000004.pt", "iteration_000002.pt"]
    assert not (tmp_path / FolderLock.NAME).exists()  # released on the way out
    resumed = _copy(fitted)  # a new session: the same fitted model, then continue from iteration 4
    history = finetune_with_boxes(resumed, *fitted[2], _mix(), progress=False, checkpoint_dir=tmp_path,
                                  checkpoint_every=2, fingerprint="f")
    assert [h["iteration"] for h in history] == [1, 2, 3, 4, 5, 6]
    assert [h["loss"] for h in history] == [h["loss"] for h in straight.history_semi]  # exactly
    assert repr(history) == repr(straight.history_semi)  # every record, NaN recalls included
    _same_model(straight, resumed)
    assert torch.equal(resumed._synthetic_gen.get_state(), straight._synthetic_gen.get_state())
    assert _names(tmp_path) == ["finetune_000004.pt", "finetune_000006.pt", "iteration_000002.pt"]
    # and without the checkpoint (4 vs 6 steps) the comparison does fail
    assert any(not torch.equal(a, b) for a, b in zip(first.model.parameters(), straight.model.parameters()))


def test_a_truncated_newest_state_is_skipped_with_a_warning(fitted, straight, tmp_path):
    first = _copy(fitted)
    _cut_after(first, 4, tmp_path)
    with pytest.raises(Disconnect):
        finetune_with_boxes(first, *fitted[2], _mix(), progress=False, checkpoint_dir=tmp_path, checkpoint_every=2,
                            fingerprint="f")
    state_path(tmp_path, 4, prefix="finetune").write_bytes(b"cut off")  # an interrupted write
    resumed = _copy(fitted)
    with pytest.warns(UserWarning, match="finetune_000004"):
        history = finetune_with_boxes(resumed, *fitted[2], _mix(), progress=False, checkpoint_dir=tmp_path,
                                      checkpoint_every=2, fingerprint="f")
    assert repr(history) == repr(straight.history_semi)  # from iteration 2, to the same end
    _same_model(straight, resumed)


def test_a_state_of_another_configuration_or_fingerprint_is_refused(fitted, tmp_path):
    model = _copy(fitted)
    finetune_with_boxes(model, *fitted[2], _mix(iterations=2), progress=False, checkpoint_dir=tmp_path,
                        fingerprint="f")
    assert _names(tmp_path) == ["finetune_000002.pt"]  # written at the end
    assert newest_training_state(tmp_path, model.config, "f") is None  # fit's states are another series

    def again(mix=None, fingerprint="f", tuned=None, **kw):
        return finetune_with_boxes(tuned or _copy(fitted), *fitted[2], mix or _mix(iterations=2), progress=False,
                                   checkpoint_dir=tmp_path, fingerprint=fingerprint, **kw)

    assert len(again()) == 2  # the same: restored, nothing left to train
    with pytest.raises(ValueError, match="another configuration"):
        again(_mix(iterations=2, lambda_u=4.0))  # another MixMatchConfig
    other = _copy(fitted)
    other.config = dataclasses.replace(other.config, ema_decay=0.9)
    with pytest.raises(ValueError, match="another configuration"):
        again(tuned=other)  # another model configuration
    with pytest.raises(ValueError, match="other data"):
        again(fingerprint="other boxes")
    with pytest.raises(ValueError, match="checkpoint_every"):
        again(checkpoint_every=0)
    (tmp_path / FolderLock.NAME).write_text(f'{{"pid": {os.getpid()}, "host": "{socket.gethostname()}"}}')
    with pytest.raises(FolderLockedError):  # a second run on the same folder while the first is alive
        again()


def test_semirest_table_resumes_a_fine_tune_from_its_states_and_removes_them_with_the_category(tmp_path,
                                                                                              monkeypatch):
    from cutswap_lib.runs import SemiRunSettings, run_semirest_category
    from cutswap_lib.runs import semirest_tables

    make_toy_dataset(tmp_path / "gen", "disc", n_train=8, n_test_good=3, n_test_defect=2, image_size=64, seed=0)
    shutil.copytree(tmp_path / "gen" / "disc", tmp_path / "mvtec" / "bottle")
    settings = dataclasses.replace(SemiRunSettings.small(), image_size=64, n_labelled=2, seeds=(0,),
                                   mixmatch=MixMatchConfig(iterations=3, ramp_steps=1))
    settings.config = dataclasses.replace(settings.config, iterations=2)
    steps = []
    original = SemiREST.train_step
    monkeypatch.setattr(SemiREST, "train_step", lambda self, *a, **k: steps.append(1) or original(self, *a, **k))
    states = tmp_path / "results" / "work" / "semirest_mvtec" / "bottle"
    run = lambda: run_semirest_category("mvtec", tmp_path / "mvtec", "bottle", settings,  # noqa: E731
                                        setting_names=("semi",), device="cpu", progress=False, checkpoints=states)
    first = run()
    assert len(steps) == 2 + 3
    (folder,) = states.glob("semi_paper_seed0_*")  # next to the unsupervised model's folder
    assert _names(folder) == ["finetune_000003.pt"] and list(states.glob("unsupervised_seed0_*/iteration_000002.pt"))
    steps.clear()  # a second run (after a disconnect) finds both finished states: no training step, same numbers
    again = run()
    assert steps == []
    key = lambda r: (r["method"], r["ap"], r["pro"])  # noqa: E731
    assert sorted(map(key, again)) == sorted(map(key, first))
    # a changed fine-tune (another guess pivot) trains anew in its own folder, from the same unsupervised model
    settings.mixmatch = dataclasses.replace(settings.mixmatch, guess_pivot="known")
    run()
    assert len(steps) == 3 and len(list(states.glob("semi_paper_seed0_*"))) == 2
    # the command removes a category's states once its rows are in the CSV, the fine-tune's with the rest
    monkeypatch.setattr(semirest_tables, "run_semirest_category", lambda *a, checkpoints, **k: first)
    semirest_tables.semirest_table("mvtec", tmp_path / "mvtec", ["bottle"], settings, results=tmp_path / "results",
                                   setting_names=("semi",), device="cpu", progress=False)
    assert not states.exists()


def test_each_table_6_row_trains_in_its_own_state_folder(tmp_path):
    """Rows that differ only in the SemiREST configuration (residual, kNN) must not share a folder: the
    second row would find the first one's state and be refused as another configuration."""
    from cutswap_lib.runs import SemiRunSettings, run_semirest_category

    make_toy_dataset(tmp_path / "gen", "disc", n_train=6, n_test_good=2, n_test_defect=2, image_size=64, seed=0)
    shutil.copytree(tmp_path / "gen" / "disc", tmp_path / "mvtec" / "bottle")
    settings = dataclasses.replace(SemiRunSettings.small(), image_size=64, seeds=(0,))
    settings.config = dataclasses.replace(settings.config, iterations=1)
    states = tmp_path / "states"
    rows = run_semirest_category("mvtec", tmp_path / "mvtec", "bottle", settings, setting_names=("unsupervised",),
                                 ablation=True, device="cpu", progress=False, checkpoints=states)
    variants = {r["variant"] for r in rows if r["method"] == "semirest"}
    assert len(variants) == 6  # every unsupervised row of Table 6 ran
    # the two bagging rows share one trained model (they differ at inference only): 5 models, 5 folders
    assert len(list(states.glob("unsupervised_seed0_*"))) == 5


def test_semi_variants_share_the_baselines_and_the_first_equals_the_paper_fine_tune(tmp_path):
    """``semi_variants``: one unsupervised model and one PatchCore / not-fine-tuned evaluation per seed;
    each variant fine-tunes with its own spec, and the variant without changes is the default fine-tune."""
    from cutswap_lib.runs import SemiRunSettings, run_semirest_category

    make_toy_dataset(tmp_path / "gen", "disc", n_train=8, n_test_good=3, n_test_defect=2, image_size=64, seed=0)
    shutil.copytree(tmp_path / "gen" / "disc", tmp_path / "mvtec" / "bottle")
    settings = dataclasses.replace(SemiRunSettings.small(), image_size=64, n_labelled=2, seeds=(0,),
                                   mixmatch=MixMatchConfig(iterations=3, ramp_steps=1))
    settings.config = dataclasses.replace(settings.config, iterations=2)
    run = lambda **k: run_semirest_category("mvtec", tmp_path / "mvtec", "bottle", settings,  # noqa: E731
                                            setting_names=("semi",), device="cpu", progress=False, **k)
    paper = run()
    start = "square+PCF+bagging+kNN"
    rows = run(semi_variants={"same": (start, {}), "no-insides": (start, {"unknown_tokens": False}),
                              "pivot-box": (start, {"guess_pivot": "box"})})
    assert [(r["method"], r["variant"]) for r in rows] == [
        ("patchcore", "paper"), ("semirest", "not fine-tuned"),
        ("semirest", "same"), ("semirest", "no-insides"), ("semirest", "pivot-box")]
    metrics = lambda r: (r["ap"], r["pro"], r["pixel_auroc"], r["image_auroc"])  # noqa: E731
    assert [metrics(r) for r in rows[:3]] == [metrics(r) for r in paper]  # same start, same draws, same numbers
    assert len({metrics(r) for r in rows[2:]}) == 3  # each spec changed its fine-tune
