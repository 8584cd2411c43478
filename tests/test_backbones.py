"""Backbones: real Lite0 ImageNet weights, level shapes, truncation, the offline weights policy.

Every network is built once per module (module-scoped fixtures); random-init networks
run at 64 px, the pretrained Lite0 at 224 px on two scikit-image photographs.
"""

import time
import warnings

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision import transforms as T

from cutswap_lib import backbones as B
from cutswap_lib import weights as W

CHELSEA, COFFEE = 285, 967  # ImageNet classes: "Egyptian cat", "espresso"
SIZE = 64  # side of the random-init inputs


def _photos(names=("chelsea", "coffee")) -> torch.Tensor:
    """skimage photographs as the course feeds images: shorter side 224, centre crop, [0, 1]."""
    skdata = pytest.importorskip("skimage.data")
    prep = T.Compose([T.Resize(224), T.CenterCrop(224), T.ToTensor()])
    return torch.stack([prep(Image.fromarray(getattr(skdata, n)())) for n in names])  # (N, 3, 224, 224)


@pytest.fixture(scope="module")
def photos():
    return _photos()


@pytest.fixture(scope="module")
def lite0():
    return B.build_classifier("efficientnet_lite0")


@pytest.fixture(scope="module", params=B.BACKBONES)
def saliency_extractor(request):
    """Each backbone, random init, cut at its deepest saliency level."""
    torch.manual_seed(0)
    name = request.param
    return B.build_feature_extractor(name, B.default_layers(name, "saliency"), weights=None)


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    """An empty torch hub cache and a download host that never resolves (RFC 6761)."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    urls = {k: v.replace("download.pytorch.org", "download.invalid")
            for k, v in W.TORCHVISION_URLS.items()}
    monkeypatch.setattr(W, "TORCHVISION_URLS", urls)
    monkeypatch.setattr(W.urllib.request, "getproxies", dict)  # probe the host itself
    return tmp_path / "hub" / "checkpoints"


# ----------------------------------------------------------------- pretrained Lite0
def test_lite0_weights_are_real_imagenet(lite0, photos):
    assert lite0.weights_loaded == "imagenet"
    with torch.no_grad():
        top1 = lite0(photos).argmax(1).tolist()  # (2,)
    assert top1 == [CHELSEA, COFFEE]


def test_lite0_normalisation_is_tf_lite(lite0):
    """Pin (x - 127) / 128: the constants, and the stem BatchNorm's training statistics.

    Both normalisations give the same top-1 on chelsea and coffee (the network is robust
    to it), so the pin uses what the weights remember of their input: over four natural
    photographs the stem conv's output variance is 0.7x ``_bn0.running_var`` (geometric
    mean over channels) under (x - 127) / 128, and 3.5x under ImageNet mean / std.
    """
    assert lite0.normalize.mean.flatten().tolist() == pytest.approx([127 / 255] * 3)
    assert lite0.normalize.std.flatten().tolist() == pytest.approx([128 / 255] * 3)
    photos = _photos(("chelsea", "coffee", "astronaut", "rocket"))
    net = lite0.net
    live = net._bn0.running_var > 1e-3  # a few stem channels are dead (zero variance)

    def variance_ratio(mean, std) -> float:
        z = (photos - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        with torch.no_grad():
            var = net._conv_stem(z).var(dim=(0, 2, 3))  # (32,)
        return (var[live] / net._bn0.running_var[live]).log().mean().exp().item()

    tf_lite, imagenet = (variance_ratio(B.LITE0_MEAN, B.LITE0_STD),
                         variance_ratio(B.IMAGENET_MEAN, B.IMAGENET_STD))
    assert 0.5 < tf_lite < 1.5 and imagenet > 2.5
    assert abs(np.log(tf_lite)) < abs(np.log(imagenet)) / 2


def test_lite0_extractor_matches_classifier_levels(lite0, photos):
    fe = B.build_feature_extractor("efficientnet_lite0", B.default_layers("efficientnet_lite0",
                                                                          "saliency"))
    seen = {}
    hooks = [m.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, o))
             for k, m in zip(fe.layers, B.saliency_target_layers("efficientnet_lite0", lite0))]
    with torch.no_grad():
        lite0(photos[:1])
        feats = fe(photos[:1])
    for h in hooks:
        h.remove()
    assert fe.weights_loaded == "imagenet"
    for k in fe.layers:
        torch.testing.assert_close(feats[k], seen[k])


def test_layercam_runs_on_lite0_levels(lite0, photos):
    from pytorch_grad_cam import LayerCAM

    x = torch.nn.functional.interpolate(photos, size=128, mode="bilinear", antialias=True)
    layers = B.saliency_target_layers("efficientnet_lite0", lite0)
    assert layers == [lite0.net._blocks[i] for i in (0, 2, 4, 10, 15)]
    with LayerCAM(lite0, target_layers=layers) as cam:
        cam(input_tensor=x, targets=None)  # one forward + backward, top-1 targets
        maps = np.concatenate(cam.compute_cam_per_layer(x, None, False), axis=1)
    assert maps.shape == (2, 5, 128, 128)
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert (maps.reshape(2, 5, -1).max(-1) > 0).all()  # every level saw something


def test_layercam_runs_on_resnet18_levels():
    from pytorch_grad_cam import LayerCAM

    torch.manual_seed(0)
    clf = B.build_classifier("resnet18", weights=None)
    x = torch.rand(2, 3, SIZE, SIZE)
    layers = B.saliency_target_layers("resnet18", clf)
    assert layers == [clf.net.relu, clf.net.layer1, clf.net.layer2, clf.net.layer3, clf.net.layer4]
    with LayerCAM(clf, target_layers=layers) as cam:
        cam(input_tensor=x, targets=None)
        maps = np.concatenate(cam.compute_cam_per_layer(x, None, False), axis=1)
    assert maps.shape == (2, 5, SIZE, SIZE) and np.isfinite(maps).all()


def test_vgg16_saliency_layers_are_the_papers_max_pools():
    with torch.device("meta"):  # structure only: no memory, no init cost
        net = torchvision.models.vgg16()
    assert B.saliency_target_layers("vgg16", net) == [net.features[i] for i in (4, 9, 16, 23, 30)]
    assert all(isinstance(m, torch.nn.MaxPool2d) for m in B.saliency_target_layers("vgg16", net))


# ----------------------------------------------------------------- levels
def test_levels_shapes_strides_channels(saliency_extractor):
    fe = saliency_extractor
    assert fe.weights_loaded == "random" and not fe.training
    assert fe.layers == B.default_layers(fe.name, "saliency")
    assert list(fe.strides.values()) == [2, 4, 8, 16, 32]
    with torch.no_grad():
        out = fe(torch.rand(2, 3, SIZE, SIZE))
    assert list(out) == fe.layers
    for level, fmap in out.items():
        s = fe.strides[level]
        assert fmap.shape == (2, fe.channels[level], SIZE // s, SIZE // s), level
    patchcore = B.default_layers(fe.name, "patchcore")
    assert [fe.strides[lv] for lv in patchcore] == [8, 16]


def test_default_layers():
    assert B.default_layers("resnet18") == ["layer2", "layer3"]
    assert B.default_layers("wide_resnet50_2") == ["layer2", "layer3"]
    assert B.default_layers("vgg16") == ["features.16", "features.23"]
    assert B.default_layers("vgg16", "saliency") == [f"features.{i}" for i in (4, 9, 16, 23, 30)]
    assert B.default_layers("efficientnet_lite0") == ["_blocks.4", "_blocks.10"]
    fe = B.build_feature_extractor("efficientnet_lite0", weights=None)
    assert fe.layers == ["_blocks.4", "_blocks.10"]
    assert fe.channels == {"_blocks.4": 40, "_blocks.10": 112}
    with pytest.raises(ValueError, match="purpose"):
        B.default_layers("resnet18", "classification")


def _count_calls(module: torch.nn.Module, x: torch.Tensor) -> dict[str, int]:
    calls: dict[str, int] = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: calls.__setitem__(n, calls.get(n, 0) + 1))
             for n, m in module.named_modules() if n]
    with torch.no_grad():
        module(x)
    for h in hooks:
        h.remove()
    return calls


def test_truncation_runs_nothing_deeper():
    torch.manual_seed(0)
    fe = B.build_feature_extractor("resnet18", ["layer2"], weights=None)
    names = {n.split(".")[1] for n, _ in fe.named_modules() if n.startswith("net.")}
    assert names == {"conv1", "bn1", "relu", "maxpool", "layer1", "layer2"}
    calls = _count_calls(fe, torch.rand(1, 3, SIZE, SIZE))
    assert set(calls) == {n for n, _ in fe.named_modules() if n not in ("", "net")}  # all ran
    assert calls["net.layer2"] == 1

    lite = B.build_feature_extractor("efficientnet_lite0", ["_blocks.4"], weights=None)
    assert len(lite.net._blocks) == 5
    assert not any(hasattr(lite.net, m) for m in ("_conv_head", "_bn1", "_fc"))
    calls = _count_calls(lite, torch.rand(1, 3, SIZE, SIZE))
    assert calls["net._blocks.4"] == 1 and "net._blocks.5" not in calls


def test_layers_come_in_network_order_and_are_checked():
    fe = B.build_feature_extractor("efficientnet_lite0", ["_blocks.10", "_blocks.2"], weights=None)
    assert fe.layers == ["_blocks.2", "_blocks.10"]
    with pytest.raises(ValueError, match="its levels"):
        B.build_feature_extractor("resnet18", ["layer5"], weights=None)
    with pytest.raises(ValueError, match="unknown backbone"):
        B.build_feature_extractor("resnet19")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        fe(torch.zeros(1, 1, SIZE, SIZE))


def test_gradients_flow_and_no_grad_works():
    fe = B.build_feature_extractor("efficientnet_lite0")  # PatchCore levels, ImageNet
    x = torch.rand(2, 3, SIZE, SIZE, requires_grad=True)
    out = fe(x)
    sum(f.square().mean() for f in out.values()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in fe.parameters())  # every kept module is used
    with torch.no_grad():
        assert all(f.grad_fn is None for f in fe(x).values())


# ----------------------------------------------------------------- weights policy
def test_offline_imagenet_warns_and_falls_back_fast(offline):
    t0 = time.perf_counter()
    with pytest.warns(UserWarning, match="backbone='efficientnet_lite0'"):
        fe = B.build_feature_extractor("resnet18", weights="imagenet")
    assert time.perf_counter() - t0 < W.PROBE_TIMEOUT_S + 2
    assert fe.weights_loaded == "random"
    with pytest.raises(B.WeightsUnavailableError, match="efficientnet_lite0"):
        B.build_feature_extractor("resnet18", weights="imagenet", strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # weights=None: random on purpose, no warning
        assert B.build_feature_extractor("resnet18", weights=None).weights_loaded == "random"


def test_hub_cache_is_used_and_a_corrupt_cache_file_is_named(offline):
    offline.mkdir(parents=True)
    cached = offline / "resnet18-f37072fd.pth"
    torch.manual_seed(1)
    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), cached)
    fe = B.build_feature_extractor("resnet18", weights="imagenet", strict=True)
    assert fe.weights_loaded == "imagenet"
    torch.testing.assert_close(fe.net.layer3[1].conv2.weight, reference.layer3[1].conv2.weight)
    assert B.pretrained_available()["resnet18"] is True

    cached.write_bytes(b"half a download")
    with pytest.raises(B.CheckpointError, match="resnet18-f37072fd.pth"):
        B.build_feature_extractor("resnet18", weights="imagenet")


def test_corrupt_lite0_weights_file_is_named(monkeypatch, tmp_path):
    garbage = tmp_path / "efficientnet-lite0-broken.pth"
    garbage.write_bytes(b"\x00not a checkpoint" * 64)
    monkeypatch.setattr(W, "lite0_weights_path", lambda: garbage)
    with pytest.raises(B.CheckpointError, match="efficientnet-lite0-broken.pth"):
        B.build_classifier("efficientnet_lite0")


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(2)
    clf = B.build_classifier("resnet18", weights=None)
    x = torch.rand(1, 3, SIZE, SIZE)
    ref = B.build_feature_extractor("resnet18", weights=None)
    ref.net.load_state_dict(clf.net.state_dict(), strict=False)
    with torch.no_grad():
        expected = ref(x)
    # a classifier checkpoint wrapped as training loops save it, with a "net." prefix
    path = tmp_path / "classifier.pt"
    torch.save({"state_dict": clf.state_dict(), "epoch": 3}, path)
    fe = B.build_feature_extractor("resnet18", weights=path)
    # a training model holding the extractor plus a head: "backbone.net." prefix
    path2 = tmp_path / "trained.pth"
    state = {f"backbone.{k}": v for k, v in fe.state_dict().items()}
    state["head.0.weight"] = torch.zeros(3, 384)
    torch.save(state, path2)
    fe2 = B.build_feature_extractor("resnet18", weights=str(path2))
    assert fe.weights_loaded == fe2.weights_loaded == "checkpoint"
    with torch.no_grad():
        for level in fe.layers:
            torch.testing.assert_close(fe(x)[level], expected[level])
            torch.testing.assert_close(fe2(x)[level], expected[level])
    # ...but not into a network it does not hold: layer4 was never saved by fe
    with pytest.raises(B.CheckpointError, match="trained.pth.*missing keys"):
        B.build_feature_extractor("resnet18", ["layer4"], weights=path2)


class _NotAWeight:
    pass


def test_bad_checkpoint_files_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        B.load_checkpoint(tmp_path / "nowhere.pt")
    code = tmp_path / "pickled_object.pt"
    torch.save({"obj": _NotAWeight()}, code)  # weights_only=True refuses to unpickle it
    with pytest.raises(B.CheckpointError, match="pickled_object.pt.*weights_only"):
        B.load_checkpoint(code)
    tensor = tmp_path / "bare_tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(B.CheckpointError, match="bare_tensor.pt holds a Tensor"):
        B.load_checkpoint(tensor)
    other = tmp_path / "lite0.pt"
    torch.save(B.build_feature_extractor("efficientnet_lite0", weights=None).state_dict(), other)
    with pytest.raises(B.CheckpointError, match="lite0.pt holds no weights"):
        B.build_feature_extractor("resnet18", weights=other)


# ----------------------------------------------------------------- choosing
def test_choose_backbone_offline_and_online(offline, monkeypatch, capsys):
    available = B.pretrained_available()
    assert set(available) == set(B.BACKBONES)
    assert available == {"resnet18": False, "wide_resnet50_2": False, "vgg16": False,
                         "efficientnet_lite0": True}
    assert B.choose_backbone("resnet18") == "efficientnet_lite0"
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["backbone: efficientnet_lite0 (ImageNet weights of resnet18 not available "
                     "offline; Lite0 ships with the package)"]
    assert B.choose_backbone("efficientnet_lite0", verbose=False) == "efficientnet_lite0"

    monkeypatch.setattr(W, "_availability", lambda name, check_network=True: (True, "cached"))
    assert B.choose_backbone("resnet18") == "resnet18"
    assert capsys.readouterr().out == "backbone: resnet18 (cached)\n"
    with pytest.raises(ValueError, match="unknown backbone"):
        B.choose_backbone("resnet50")


def test_choose_backbone_here_matches_availability(capsys):
    """Unpatched: whatever this machine has (offline here: Lite0), one printed line."""
    expected = "resnet18" if B.pretrained_available()["resnet18"] else "efficientnet_lite0"
    assert B.choose_backbone() == expected
    assert len(capsys.readouterr().out.splitlines()) == 1
