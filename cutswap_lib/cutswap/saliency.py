"""Multilevel LayerCAM saliency maps, with an on-disk cache (CutSwap Sec. III-A).

CutSwap draws its two patch anchors from saliency maps of several layers of one
network: LayerCAM (Jiang et al., "LayerCAM: Exploring hierarchical class activation maps
for localization", IEEE TIP 30, 2021), at every spatial position (i, j) of a layer's
activations A (channels k) for the target score y^c::

    M^c_ij = ReLU( sum_k ReLU(dy^c / dA^k_ij) * A^k_ij )        (LayerCAM)

The paper's layers are "indexed 4, 9, 16, 23, 30": the five max-pool outputs of
torchvision's ``vgg16().features`` (strides 2..32); ``cutswap_lib.backbones``
gives them, and Lite0's counterparts, as ``saliency_target_layers(name, model)``.

:func:`multilevel_layercam` computes every level from **one** forward and **one**
backward pass over the whole batch, on the input's device; the ``grad-cam`` package
(``pytorch_grad_cam.LayerCAM``, the reference of ``tests/test_saliency.py``) needs one
pass per layer with one ``target_layers`` each, and copies every activation to numpy.
The gradients are taken with respect to the hooked activations only
(``torch.autograd.grad``), so no parameter gradient is computed or accumulated.

**Normalisation, as grad-cam does it** (grad-cam 1.5: ``BaseCAM.compute_cam_per_layer``,
``aggregate_multi_layers`` and ``utils.image.scale_cam_image``): the map is ReLU'd, then
min-max scaled *at the layer's own resolution* (``m - min``, then ``/ (max + 1e-7)``),
then resized to the image size with ``cv2.resize(..., INTER_LINEAR)`` – here
``F.interpolate(bilinear, align_corners=False)``, the same half-pixel bilinear sampling
with edge clamping when upsampling – and then, in what ``LayerCAM(...)(x)`` returns,
min-max scaled once more at image size (``aggregate_multi_layers``: the mean over one
layer is the map itself). So every map spans [0, 1] exactly (up to the 1e-7) unless it
is all zero. ``rescale=False`` stops before that last step, as
``compute_cam_per_layer`` does (its upsampled maxima can be a little below 1). Both are
checked against grad-cam to 1e-4 in ``tests/test_saliency.py``. The LayerCAM paper also
rescales shallow maps with ``tanh(2 M / max M)``; grad-cam does not, nor does this
module.

**Target class** (the paper does not state one): ``target=None`` takes each image's
own top-1 class, as grad-cam does with ``targets=None``; an ``int`` or a ``(B,)``
tensor of class ids otherwise. The score is the sum over the batch of each image's
target logit (images do not interact in eval mode, so each map is its image's own).

Taught in ``notebooks/01_saliency_and_clustering.ipynb``. The clustering half of Sec.
III-A lives in :mod:`cutswap_lib.cutswap.clustering`.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..files import atomic_write

GRADCAM_EPS = 1e-7  # grad-cam's scale_cam_image: (m - min) / (max + 1e-7)


def _check_images(images) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        got = (f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor)
               else type(images))
        raise ValueError(f"images must be a float tensor (B, 3, H, W) in [0, 1], got {got}")


def resolve_target(target, logits: torch.Tensor) -> torch.Tensor:
    """The class id each map explains: ``None`` (top-1), int or ``(B,)`` -> long ``(B,)``."""
    b, classes = logits.shape
    if target is None:
        return logits.detach().argmax(1)  # (B,) grad-cam's default
    t = torch.as_tensor(target, device=logits.device).long().reshape(-1)
    if t.numel() == 1:
        t = t.expand(b)
    if t.shape != (b,) or bool(((t < 0) | (t >= classes)).any()):
        raise ValueError(f"target must be None, a class id or {b} class ids in [0, {classes}), "
                         f"got {target!r}")
    return t


def _minmax(m: torch.Tensor) -> torch.Tensor:
    """grad-cam's ``scale_cam_image`` scaling, per map: ``(m - min) / (max(m - min) + 1e-7)``."""
    m = m - m.amin((-2, -1), keepdim=True)
    return m / (m.amax((-2, -1), keepdim=True) + GRADCAM_EPS)


def scale_like_gradcam(cam: torch.Tensor, size: tuple[int, int], rescale: bool = True) -> torch.Tensor:
    """grad-cam's map scaling in torch: ``(B, h, w)`` -> ``(B, H, W)`` in [0, 1].

    Min-max at the layer's resolution, bilinear resize (``align_corners=False``, as
    ``cv2.resize`` ``INTER_LINEAR`` samples when upsampling), then (``rescale=True``,
    what ``LayerCAM(...)(x)`` returns) min-max again at image size; ``rescale=False``
    stops after the resize, as ``compute_cam_per_layer`` does.
    """
    cam = _minmax(cam)
    if tuple(cam.shape[-2:]) != tuple(size):
        cam = F.interpolate(cam[:, None], size=tuple(size), mode="bilinear",
                            align_corners=False)[:, 0]  # (B, H, W)
    return _minmax(cam) if rescale else cam


def multilevel_layercam(model: nn.Module, images: torch.Tensor, layers: Sequence[nn.Module],
                        target=None, *, rescale: bool = True, return_target: bool = False):
    """Multilevel LayerCAM (CutSwap Sec. III-A): ``(B, 3, H, W)`` -> ``(B, L, H, W)`` in [0, 1].

    Every level from one forward and one backward pass.

    ``model``: images -> logits ``(B, classes)`` (e.g. ``backbones.build_classifier``);
    ``layers``: ``L`` submodules of ``model`` whose 4-D outputs are explained;
    ``target``: None (each image's top-1), a class id or ``(B,)`` class ids. Map per
    layer: ``ReLU(sum_k ReLU(dy/dA^k) * A^k)``, min-max scaled and resized as grad-cam
    does (module docstring; ``rescale=False``: without the last min-max). Runs in eval
    mode (the model's mode is restored after) and on the images' device; hooks are
    always removed. ``return_target=True`` also returns the ``(B,)`` class ids used.
    """
    _check_images(images)
    layers = list(layers)
    if not layers:
        raise ValueError("layers is empty: pass the modules to explain, e.g. "
                         "backbones.saliency_target_layers(name, model)")
    acts: list[torch.Tensor | None] = [None] * len(layers)

    def keep(i):
        def hook(module, inputs, output):
            if acts[i] is not None:
                raise ValueError(f"layer {i} ({type(module).__name__}) ran twice in one forward "
                                 f"pass; LayerCAM needs a module that runs once")
            if not isinstance(output, torch.Tensor) or output.ndim != 4:
                shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output)
                raise ValueError(f"layer {i} ({type(module).__name__}) outputs {shape}; "
                                 f"LayerCAM needs a (B, C, h, w) feature map")
            acts[i] = output
        return hook

    handles, was_training = [], model.training
    try:
        handles = [layer.register_forward_hook(keep(i)) for i, layer in enumerate(layers)]
        model.eval()
        with torch.enable_grad():
            x = images.clone() if images.is_inference() else images
            if not any(p.requires_grad for p in model.parameters()):
                x = x.detach().requires_grad_(True)  # a frozen model still needs a graph
            logits = model(x)  # (B, classes)
            missing = [i for i, a in enumerate(acts) if a is None]
            if missing:
                raise ValueError(f"layers {missing} did not run in model's forward pass: pass "
                                 f"submodules of model (saliency_target_layers(name, model))")
            if logits.ndim != 2 or logits.shape[0] != images.shape[0]:
                raise ValueError(f"model must return logits (B, classes), got {tuple(logits.shape)}")
            tgt = resolve_target(target, logits)  # (B,)
            score = logits.gather(1, tgt[:, None]).sum()  # sum over the batch of y^c
            grads = torch.autograd.grad(score, acts, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    size = tuple(images.shape[-2:])
    maps = []
    for a, g in zip(acts, grads):
        a = a.detach().float()
        g = torch.zeros_like(a) if g is None else g.float()
        cam = (g.clamp(min=0) * a).sum(1).clamp(min=0)  # (B, h, w) LayerCAM
        maps.append(scale_like_gradcam(cam, size, rescale))  # (B, H, W)
    maps = torch.stack(maps, 1)  # (B, L, H, W)
    return (maps, tgt) if return_target else maps


# --------------------------------------------------------------------------- cache
def _layer_names(model: nn.Module, layers) -> list[str]:
    names = {id(m): n for n, m in model.named_modules()}
    return [names.get(id(layer), f"?{type(layer).__name__}") for layer in layers]


def weights_fingerprint(model: nn.Module, samples: int = 1024) -> str:
    """A short hash of a model's parameters and buffers (names, shapes, strided values)."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            flat = t.detach().reshape(-1)
            flat = flat[:: max(1, flat.numel() // samples)]
            h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
            h.update(flat.double().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class SaliencyCache:
    """Multilevel LayerCAM maps on disk, one float16 ``.pt`` per image (CutSwap Sec. III-A).

    ``cache(model, images, layers, target=None, paths=None) -> (B, L, H, W)`` returns the
    maps of :func:`multilevel_layercam`, computing only the images not yet on disk (in one
    batched pass) and reading the others (``torch.load(weights_only=True)``, no forward
    pass). The key of an image hashes: its pixels (or, with ``paths``, the file's
    absolute path, size and mtime: pass paths only when ``images`` are that file loaded
    deterministically), the network (``model.name`` or its class), its weights
    (``model.weights_loaded`` and :func:`weights_fingerprint`, so two random inits differ),
    the layer names, the target (``"top1"`` or the class id) and the image size. Maps
    are stored as float16 and always returned rounded to float16 (then float32), so a
    first and a later call give the same numbers. Counters: ``hits``, ``misses``.
    Files are written atomically; an unreadable file is recomputed.
    """

    VERSION = 1

    def __init__(self, folder):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.hits = self.misses = 0
        self._prints = weakref.WeakKeyDictionary()  # model -> (tensor versions, fingerprint)

    def _fingerprint(self, model) -> str:
        """:func:`weights_fingerprint`, recomputed only when a tensor was replaced or changed."""
        state = tuple((t.data_ptr(), t._version) for t in
                      list(model.parameters()) + list(model.buffers()))
        known = self._prints.get(model)
        if known is None or known[0] != state:
            known = (state, weights_fingerprint(model))
            self._prints[model] = known
        return known[1]

    def _settings(self, model, layers) -> dict:
        return {"v": self.VERSION, "network": getattr(model, "name", type(model).__name__),
                "weights": str(getattr(model, "weights_loaded", "")),
                "fingerprint": self._fingerprint(model), "layers": _layer_names(model, layers)}

    def keys(self, model, images, layers, target=None, paths=None) -> list[str]:
        """The cache key (hex) of each image of the batch."""
        _check_images(images)
        b = images.shape[0]
        settings = self._settings(model, layers)
        settings["size"] = list(images.shape[-2:])
        if target is None:
            targets = ["top1"] * b
        else:
            t = torch.as_tensor(target).reshape(-1).tolist()
            targets = t * b if len(t) == 1 else t
            if len(targets) != b:
                raise ValueError(f"target has {len(targets)} class ids for {b} images")
        if paths is not None:
            if len(paths) != b:
                raise ValueError(f"paths has {len(paths)} entries for {b} images")
            ids = []
            for p in paths:
                p = Path(p).resolve()
                try:
                    st = p.stat()
                except OSError as err:
                    raise FileNotFoundError(f"cannot key saliency cache on image {p}: {err}") from None
                ids.append(f"{p}|{st.st_size}|{st.st_mtime_ns}")
        else:
            pixels = images.detach().float().cpu().contiguous()
            ids = [hashlib.sha256(pixels[i].numpy().tobytes()).hexdigest() for i in range(b)]
        return [hashlib.sha256(json.dumps({**settings, "image": ids[i], "target": targets[i]},
                                          sort_keys=True).encode()).hexdigest()[:32]
                for i in range(b)]

    def _load(self, path: Path, device):
        try:
            entry = torch.load(path, map_location=device, weights_only=True)
            return entry["maps"]
        except Exception:  # missing, corrupt, partial or foreign file: recompute it
            return None

    def _store(self, path: Path, maps: torch.Tensor, target: int) -> None:
        with atomic_write(path, "wb") as fh:  # readers see a whole file or none
            torch.save({"maps": maps.detach().cpu().clone(), "target": int(target)}, fh)

    def __call__(self, model: nn.Module, images: torch.Tensor, layers: Sequence[nn.Module],
                 target=None, *, paths=None) -> torch.Tensor:
        """Cached :func:`multilevel_layercam`: ``(B, 3, H, W)`` -> ``(B, L, H, W)`` float32."""
        layers = list(layers)
        keys = self.keys(model, images, layers, target, paths)
        found = [self._load(self.folder / f"{k}.pt", images.device) for k in keys]
        todo = [i for i, m in enumerate(found) if m is None or m.shape[0] != len(layers)
                or tuple(m.shape[-2:]) != tuple(images.shape[-2:])]
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        if todo:
            sub_target = target
            if target is not None and torch.as_tensor(target).numel() > 1:
                sub_target = torch.as_tensor(target).reshape(-1)[todo]
            maps, tgt = multilevel_layercam(model, images[todo], layers, sub_target,
                                            return_target=True)
            maps = maps.half()  # (b, L, H, W)
            for j, i in enumerate(todo):
                self._store(self.folder / f"{keys[i]}.pt", maps[j], int(tgt[j]))
                found[i] = maps[j]
        return torch.stack([m.to(images.device) for m in found]).float()  # (B, L, H, W)
