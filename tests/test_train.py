"""3-way fine-tuning: determinism, resume after an interruption, the PatchCore hand-over."""

import pytest
import torch

from cutswap_lib.cutswap import train
from cutswap_lib.cutswap import TrainConfig, ThreeWayNet, encoder_for_patchcore, lr_at, train_three_way


@pytest.fixture(scope="module")
def tiny_data():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 48, 48, generator=gen)
    maps = torch.rand(6, 2, 48, 48, generator=gen)  # two saliency levels
    return images, maps


def config(**kw):
    base = dict(backbone="resnet18", weights=None, epochs=3, batch_size=4, patch_size=8, seed=0,
                scar_width=(2, 4), scar_length=(6, 10))
    return TrainConfig(**{**base, **kw})


def weights_of(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_same_seed_same_weights_and_history(tiny_data):
    images, maps = tiny_data
    a, hist_a = train_three_way(images, maps, config(epochs=2), device="cpu", progress=False)
    b, hist_b = train_three_way(images, maps, config(epochs=2), device="cpu", progress=False)
    wa, wb = weights_of(a), weights_of(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert hist_a == [{**r, "seconds": h["seconds"]} for r, h in zip(hist_b, hist_a)]
    assert [r["epoch"] for r in hist_a] == [0, 1]


def test_resume_after_interruption_reaches_the_same_weights(tiny_data, tmp_path, monkeypatch):
    images, maps = tiny_data
    full, full_hist = train_three_way(images, maps, config(), checkpoint_dir=tmp_path / "full",
                                      device="cpu", progress=False)

    real_save = train.save_checkpoint

    def save_then_die(model, optimizer, cfg, epoch, history, folder, fingerprint=None):
        path = real_save(model, optimizer, cfg, epoch, history, folder, fingerprint)
        if epoch == 1:
            raise KeyboardInterrupt("simulated interruption after epoch 1")
        return path

    monkeypatch.setattr(train, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_three_way(images, maps, config(), checkpoint_dir=tmp_path / "cut", device="cpu",
                        progress=False)
    monkeypatch.setattr(train, "save_checkpoint", real_save)
    assert train.latest_checkpoint(tmp_path / "cut").name == "epoch_0001.pt"
    resumed, hist = train_three_way(images, maps, config(), checkpoint_dir=tmp_path / "cut",
                                    device="cpu", progress=False)
    wf, wr = weights_of(full), weights_of(resumed)
    assert all(torch.equal(wf[k], wr[k]) for k in wf)
    assert [r["loss"] for r in hist] == [r["loss"] for r in full_hist]


def test_a_minimum_time_between_checkpoints_writes_fewer_and_trains_the_same(tiny_data, tmp_path):
    images, maps = tiny_data
    every, _ = train_three_way(images, maps, config(), checkpoint_dir=tmp_path / "every", device="cpu",
                               progress=False, keep_last=None)
    sparse, _ = train_three_way(images, maps, config(), checkpoint_dir=tmp_path / "sparse", device="cpu",
                                progress=False, keep_last=None, min_checkpoint_seconds=3600)
    assert sorted(p.name for p in (tmp_path / "every").glob("epoch_*.pt")) == [
        "epoch_0000.pt", "epoch_0001.pt", "epoch_0002.pt"]
    # within the hour only the last epoch writes, once, with the refreshed statistics
    assert [p.name for p in (tmp_path / "sparse").glob("epoch_*.pt")] == ["epoch_0002.pt"]
    assert train.load_checkpoint(tmp_path / "sparse" / "epoch_0002.pt")["bn_refreshed"]
    we, ws = weights_of(every), weights_of(sparse)
    assert all(torch.equal(we[k], ws[k]) for k in we)
    with pytest.raises(ValueError, match="min_checkpoint_seconds"):
        train_three_way(images, maps, config(epochs=1), device="cpu", progress=False, min_checkpoint_seconds=-1)


def test_only_the_newest_checkpoints_are_kept(tiny_data, tmp_path):
    images, maps = tiny_data
    train_three_way(images, maps, config(epochs=3), checkpoint_dir=tmp_path, device="cpu",
                    progress=False, keep_last=1)
    assert [p.name for p in tmp_path.glob("epoch_*.pt")] == ["epoch_0002.pt"]
    with pytest.raises(ValueError, match="keep_last"):  # refused before any epoch is trained
        train_three_way(images, maps, config(epochs=1, seed=1), checkpoint_dir=tmp_path / "none",
                        device="cpu", progress=False, keep_last=0)
    assert not (tmp_path / "none").exists()


def test_prune_checkpoints_keeps_the_newest_and_refuses_zero(tmp_path):
    for epoch in (0, 1, 2, 10):
        (tmp_path / f"epoch_{epoch:04d}.pt").write_bytes(b"x")
    deleted = train.prune_checkpoints(tmp_path, keep_last=2)
    assert [p.name for p in deleted] == ["epoch_0000.pt", "epoch_0001.pt"]
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["epoch_0002.pt", "epoch_0010.pt"]
    assert train.prune_checkpoints(tmp_path, keep_last=None) == []
    with pytest.raises(ValueError, match="keep_last"):
        train.prune_checkpoints(tmp_path, keep_last=0)


def test_resume_refuses_another_configuration(tiny_data, tmp_path):
    images, maps = tiny_data
    train_three_way(images, maps, config(epochs=1), checkpoint_dir=tmp_path, device="cpu", progress=False)
    with pytest.raises(ValueError, match="another configuration"):
        train_three_way(images, maps, config(epochs=1, lr=0.1), checkpoint_dir=tmp_path,
                        device="cpu", progress=False)


def test_cutpaste_baseline_runs_without_maps(tiny_data):
    images, _ = tiny_data
    model, hist = train_three_way(images, None, config(mode="cutpaste", epochs=1), device="cpu",
                                  progress=False)
    assert len(hist) == 1 and 0 <= hist[0]["accuracy"] <= 1
    assert model(images[:2]).shape == (2, 3)


def test_cosine_schedule_starts_at_the_paper_lr_and_ends_at_zero():
    assert lr_at(0, 100, 0.03) == pytest.approx(0.03)
    assert lr_at(50, 100, 0.03) == pytest.approx(0.015)
    assert lr_at(100, 100, 0.03) == pytest.approx(0.0, abs=1e-12)


def test_encoder_for_patchcore_shares_the_fine_tuned_weights():
    torch.manual_seed(0)
    model = ThreeWayNet("resnet18", weights=None).eval()
    extractor = encoder_for_patchcore(model)
    assert extractor.layers == ["layer2", "layer3"]
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ours = extractor(x)["layer3"]
        steps = model.encoder.net
        ref = steps.layer3(steps.layer2(steps.layer1(steps.maxpool(steps.relu(steps.bn1(
            steps.conv1(model.encoder.normalize(x))))))))
    assert torch.allclose(ours, ref)
    assert model.embed(x).shape == (2, 512)  # the paper's d = 512


def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one(tiny_data, tmp_path):
    images, maps = tiny_data
    full, _ = train_three_way(images, maps, config(), device="cpu", progress=False)
    folder = tmp_path / "ckpt"
    train_three_way(images, maps, config(epochs=3), checkpoint_dir=folder, device="cpu", progress=False,
                    keep_last=None)
    for stale in ("epoch_0002.pt",):  # pretend the run stopped while the last file was half written
        (folder / stale).unlink()
    newest = folder / "epoch_0001.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated (a full disk, a cut copy)
    with pytest.warns(UserWarning, match="epoch_0001.pt"):
        resumed, hist = train_three_way(images, maps, config(), checkpoint_dir=folder, device="cpu",
                                        progress=False)
    assert [r["epoch"] for r in hist] == [0, 1, 2]  # epoch 0 from the file, 1 and 2 trained again
    wf, wr = weights_of(full), weights_of(resumed)
    assert all(torch.equal(wf[k], wr[k]) for k in wf)


def test_a_checkpoint_folder_in_use_is_refused_before_training(tiny_data, tmp_path):
    from cutswap_lib.files import FolderLock, FolderLockedError

    images, maps = tiny_data
    with FolderLock(tmp_path / "ckpt", purpose="another run"):
        with pytest.raises(FolderLockedError, match="another run"):
            train_three_way(images, maps, config(), checkpoint_dir=tmp_path / "ckpt", device="cpu",
                            progress=False)
    assert not list((tmp_path / "ckpt").glob("epoch_*.pt"))


def test_a_finished_run_reloads_without_its_saliency_maps(tiny_data, tmp_path):
    """The last checkpoint holds the BatchNorm statistics refreshed after training, so reusing a finished
    CutSwap run (which cutswap_table does without computing maps) returns the same model, no maps needed."""
    images, maps = tiny_data
    first, _ = train_three_way(images, maps, config(epochs=2), checkpoint_dir=tmp_path, device="cpu", progress=False)
    again, _ = train_three_way(images, None, config(epochs=2), checkpoint_dir=tmp_path, device="cpu", progress=False)
    wa, wb = weights_of(first), weights_of(again)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # running statistics included


@pytest.mark.parametrize("backbone, conv, norm", [("resnet18", "conv1", "bn1"),
                                                  ("vgg16", "features.0", None),
                                                  ("efficientnet_lite0", "_conv_stem", "_bn0")])
def test_the_stem_is_the_first_convolution_and_its_batchnorm(backbone, conv, norm):
    net = ThreeWayNet(backbone, None).encoder.net
    expected = list(net.get_submodule(conv).parameters()) + (list(net.get_submodule(norm).parameters()) if norm else [])
    assert [id(p) for p in train.stem_parameters(net)] == [id(p) for p in expected]
    assert isinstance(net.get_submodule(conv), torch.nn.Conv2d)
    with pytest.raises(ValueError, match="no convolution"):
        train.stem_parameters(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_a_frozen_stem_stays_as_it_starts_while_the_rest_trains(tiny_data):
    images, maps = tiny_data
    torch.manual_seed(0)
    start = weights_of(ThreeWayNet("resnet18", None))  # what train_three_way starts from with seed 0
    for freeze in (True, False):
        model, _ = train_three_way(images, maps, config(epochs=2, freeze_stem=freeze), device="cpu",
                                   progress=False)
        end = weights_of(model)
        stem = ("encoder.net.conv1.weight", "encoder.net.bn1.weight", "encoder.net.bn1.bias")
        assert all(torch.equal(end[k], start[k]) for k in stem) == freeze
        assert not torch.equal(end["encoder.net.layer1.0.conv1.weight"], start["encoder.net.layer1.0.conv1.weight"])
        assert all(p.requires_grad for p in model.parameters())  # the returned model is whole again
