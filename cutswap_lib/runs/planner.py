"""What a reproduction run will cost, before it runs: peak host / device memory and time per stage.

Issue #17's planner, printed by ``--dry-run`` of ``cutswap-table`` and ``semirest-table`` and,
for every MVTec AD category, BTAD and KSDD2 at the paper's sizes, by
``python -m cutswap_lib.runs.planner --paper``. How each figure is estimated:

* **Tensor sizes, not guesses.** The backbone (cut at its deepest level, as the run builds it)
  and the token Swin are built on PyTorch's ``meta`` device and run on meta tensors of the
  run's shapes (a batch of 16 images; one training step's windows, forward and backward;
  one inference batch of 64 windows). :class:`LiveBytes` adds up the storages alive after
  every op: that peak is the activation memory of the step, and
  :class:`~torch.utils.flop_counter.FlopCounterMode` gives its FLOPs. Nothing is allocated.
* **The rest is arithmetic on the same shapes**, held per stage (features, memory bank, pools,
  training, inference, and PatchCore's baseline column): the images the run loads (uint8; the
  test masks float32), the PCFs of every training image (``N x h x w x d_f``, float32, the
  buffer the memory bank is built from, only while it fits ``pool_budget_gb``; past it the
  PCFs are recomputed, which costs backbone passes instead), PatchCore's kept rows (only
  while they fit ``row_budget_mb``, likewise), the coreset's projection (``N h w x 128``), the bank (rows x d_f x 4 bytes
  after the coreset), the k-NN search blocks (2,048 queries x bank rows, distances, mask and
  the masked copy), the pools of :class:`~cutswap_lib.semirest.model.SemiRESTConfig`
  (neighbours, labels, shares, and PCFs in float32 / float16 / none by ``pool_budget_gb``),
  the Swin's weights, gradients, two AdamW moments and the EMA copy, and the training step's
  activations as the run makes them (``checkpoint_blocks``, one of ``window_chunks`` parts). What lives where
  follows the code: on a GPU the images, pools and PCF buffer stay on the host, the bank,
  search blocks, the coreset's projected matrix and Swin on the device (the PCF rows stay on
  the host; ``greedy_coreset`` moves them a block at a time). The full network is built on the host before it is cut (the peak of
  that moment counts).
* **Time.** On a CPU: the FLOPs divided by throughputs measured here by short timed runs
  (:func:`cpu_rates`: one backbone forward, one Swin step on a window of the attention
  window's size, one matrix product). On a T4: the FLOPs divided by
  :data:`T4_FP32_FLOPS` x :data:`T4_UTILISATION` -- an **estimate**, not a measurement.
* **Device activations are traced in float32**: on a GPU the Swin trains under bfloat16
  autocast, so the training stage's device figure is an upper bound (autocast keeps softmax
  and LayerNorm in float32; matmul activations halve).
* Not counted: the Python / torch / CUDA runtime itself (``tests/test_planner.py`` measures
  a child that only imports the library and subtracts it), allocator slack, small tensors.

``tests/test_planner.py`` runs the real code at small sizes in a subprocess and checks the
host peak estimate within 25 % of the measured peak RSS.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

GB = 1e9
# NVIDIA T4 datasheet (Tensor Core GPU for AI inference, 2019): "Single-Precision 8.1 TFLOPS", "GPU memory 16 GB".
T4_FP32_FLOPS = 8.1e12
T4_MEMORY_BYTES = 16e9
T4_UTILISATION = 0.5  # share of the peak a convolution / transformer step reaches: the course's assumption
COLAB_HOST_BYTES = 12e9  # Colab's free tier, about 12 GB of host memory (issue #17)
SEARCH_CHUNK = 2048  # queries per cdist block in token_augment.k_nearest_memory
FEATURE_BATCH = 16  # images per backbone batch in SemiREST and PatchCore
WINDOW_BATCH = 64  # windows per Swin batch in SemiREST.token_map
SEMI_STEP_FACTOR = 2.0  # MixMatch step / plain step: M = 3 guessed copies forward (no grad) ~ one more step


class LiveBytes(TorchDispatchMode):
    """Bytes of the tensor storages alive while ops run (meta tensors): ``live``, ``peak``.

    A storage counts once (views share it) from the op that made it until it is freed;
    storages made before the mode (weights, inputs) are not counted.
    """

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._seen: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage._cdata
                if key not in self._seen:
                    self._seen.add(key)
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._free, key, storage.nbytes())
        return out

    def _free(self, key: int, nbytes: int) -> None:
        self._seen.discard(key)
        self.live -= nbytes


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


@functools.lru_cache(maxsize=None)
def backbone_trace(name: str, image_size: int, batch: int = FEATURE_BATCH, feature_dim: int | None = 1024,
                   layers: tuple | None = None, grad: bool = False) -> dict:
    """Shapes, memory and FLOPs of ``batch`` images through ``name``'s locally aware patch features (meta device).

    Returns ``d`` and ``grid`` of the features, ``weights`` (bytes of the cut network), ``built``
    (bytes of the full network built before the cut), ``activations`` (peak bytes alive during
    the batch, input and output included) and ``flops`` (of the batch; forward and backward with
    ``grad``, then of the encoder alone, pooled, as the 3-way training runs it).
    """
    from ..backbones import _build_network, build_feature_extractor, default_layers
    from ..patchcore import locally_aware_patch_features

    with torch.device("meta"):
        built = _params(_build_network(name))
        wanted = list(layers) if layers else (default_layers(name, "saliency")[-1:] if grad else None)
        net = build_feature_extractor(name, layers=wanted, weights=None, device="meta")
    mode = LiveBytes()
    with mode, FlopCounterMode(display=False) as flops:
        x = torch.empty(batch, 3, image_size, image_size, device="meta")
        if grad:
            net.train()
            out = next(iter(net(x).values())).mean(dim=(2, 3))  # (B, C) the pooled encoder output
            out.sum().backward()
            shape = out.shape
        else:
            with torch.no_grad():
                feats = locally_aware_patch_features(net(x), feature_dim)  # (B, d, h, w)
                feats.permute(0, 2, 3, 1).contiguous()  # (B, h, w, d): SemiREST's _pcf layout, traced for its bytes
            shape = feats.shape
    return {"d": int(shape[1]), "grid": tuple(shape[2:]) if not grad else None, "weights": _params(net),
            "built": built, "activations": mode.peak, "flops": flops.get_total_flops()}


@functools.lru_cache(maxsize=None)
def swin_trace(d: int, embed_dim: int, depth: int, heads: int, window: int, mu: int, n_windows: int,
               train: bool, checkpoint_blocks: bool = False) -> dict:
    """Weights, peak activation bytes and FLOPs of the token Swin on ``n_windows`` windows ``(n, mu, mu, d)``.

    ``train``: forward and backward of one step (the gradients included); else a no-grad forward.
    ``checkpoint_blocks``: as :class:`~cutswap_lib.semirest.swin.TokenSwin` (the recomputation is traced too).
    """
    from ..semirest.swin import TokenSwin

    with torch.device("meta"):
        model = TokenSwin(d, embed_dim, depth, heads, window, checkpoint_blocks=checkpoint_blocks)
    mode = LiveBytes()
    with mode, FlopCounterMode(display=False) as flops, torch.set_grad_enabled(train):
        x = torch.empty(n_windows, mu, mu, d, device="meta")
        out = model(x)  # (n, mu, mu, 2)
        if train:
            out.float().sum().backward()
    return {"weights": _params(model), "activations": mode.peak, "flops": flops.get_total_flops()}


@functools.lru_cache(maxsize=None)
def cpu_rates(threads: int | None = None) -> dict:
    """FLOP/s measured here: ``conv`` (a ResNet18 forward), ``swin`` (a step of an 8x8 window), ``mm``."""
    from ..backbones import build_feature_extractor
    from ..semirest.swin import TokenSwin

    def timed(fn, repeat=5):  # the fastest of a few: a rate, not the stalls of a busy machine
        fn()  # warm-up
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    torch.manual_seed(0)
    net, x = build_feature_extractor("resnet18", weights=None), torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        conv = backbone_trace("resnet18", 128, 2, None)["flops"] / timed(lambda: net(x))
    swin, w = TokenSwin(256, 256, 1, 8, 8), torch.rand(4, 8, 8, 256)
    swin_flops = swin_trace(256, 256, 1, 8, 8, 8, 4, True)["flops"]
    swin_rate = swin_flops / timed(lambda: swin(w).sum().backward())
    a, b = torch.rand(1024, 1024), torch.rand(1024, 2048)
    mm = 2 * 1024 * 1024 * 2048 / timed(lambda: a @ b)
    return {"conv": conv, "swin": swin_rate, "mm": mm}


@dataclasses.dataclass
class Stage:
    """One stage's estimate: peak bytes on the host and on the device, FLOPs by kind."""

    name: str
    host: float = 0.0
    device: float = 0.0
    flops: dict = dataclasses.field(default_factory=dict)  # kind ("conv", "swin", "mm") -> FLOPs

    def seconds(self, rates: dict) -> float:
        return sum(f / rates[k] for k, f in self.flops.items())


class _Ledger:
    """Bytes alive on the host and on the device (on a CPU run: all on the host)."""

    def __init__(self, on_gpu: bool):
        self.on_gpu, self.host, self.device = on_gpu, 0.0, 0.0

    def add(self, nbytes: float, where: str) -> None:
        if where == "device" and self.on_gpu:
            self.device += nbytes
        else:
            self.host += nbytes

    def stage(self, name: str, flops: dict, **transient) -> Stage:
        """The stage's peak: what is alive now plus the stage's transient ``host=`` / ``device=`` bytes."""
        extra = _Ledger(self.on_gpu)
        for where, nbytes in transient.items():
            extra.add(nbytes, where)
        return Stage(name, self.host + extra.host, self.device + extra.device if self.on_gpu else 0.0, flops)


def patchcore_stages(n_train: int, n_test: int, image_size: int, backbone: str, coreset: float, *,
                     on_gpu: bool, feature_dim=None, layers=None, ledger: _Ledger | None = None,
                     prefix: str = "patchcore ") -> list[Stage]:
    """PatchCore's fit and predict (:class:`~cutswap_lib.patchcore.PatchCore`): features, bank, inference.

    ``ledger``: what is alive before (its extractor's weights included); None: a fresh run,
    whose network is built (in full, then cut) first.
    """
    from ..coreset import HALF_BANK_MB
    from ..patchcore import ROW_BUDGET_MB

    tr = backbone_trace(backbone, image_size, FEATURE_BATCH, feature_dim, tuple(layers) if layers else None)
    (h, w), d = tr["grid"], tr["d"]
    stages = []
    if ledger is None:
        ledger = _Ledger(on_gpu)
        stages.append(ledger.stage(prefix + "weights", {}, host=tr["built"]))
        ledger.add(tr["weights"], "device")
    rows = n_train * h * w
    item = 2 if rows * d * 4 > HALF_BANK_MB * 2**20 else 4  # RowChunks("auto"): float16 past 512 MiB
    k = 128 if d > 128 else d
    half_proj = not on_gpu and rows * k * 4 > 32 * 2**20
    proj = rows * k * (2 if half_proj else 4)  # greedy_coreset's matrix
    n_bank = max(1, round(coreset * rows)) if coreset < 1 else rows
    kept = rows * d * item <= ROW_BUDGET_MB * 2**20  # PatchCore.row_budget_mb: past it the rows are recomputed
    passes = 1 if kept else 3 + half_proj  # embedding passes over the training images (+ the first batch)
    stored = rows * d * item if kept else 0.0
    stages.append(ledger.stage(prefix + "features", {"conv": tr["flops"] * n_train / FEATURE_BATCH},
                               device=tr["activations"] + stored))
    stages.append(ledger.stage(prefix + "memory bank", {"mm": 2.0 * rows * d * k + 2.0 * rows * k * n_bank,
                                                        "conv": tr["flops"] * n_train / FEATURE_BATCH * (passes - 1)},
                               device=stored + proj + 12.0 * rows + n_bank * d * item
                               + (0 if kept else tr["activations"])))
    ledger.add(n_bank * d * item, "device")
    faiss = 0 if on_gpu or item == 2 else n_bank * d * 4  # faiss's float32 copy of a CPU bank
    stages.append(ledger.stage(prefix + "inference", {"conv": tr["flops"] * n_test / FEATURE_BATCH,
                                                     "mm": 2.0 * n_test * h * w * n_bank * d},
                               device=tr["activations"] + 2 * FEATURE_BATCH * h * w * d * 4 + faiss))
    return stages


def semirest_stages(n_train: int, n_test: int, image_size: int, cfg, *, backbone: str, coreset: float,
                    on_gpu: bool, n_real: int = 0, mask_pixels: float | None = None,
                    semi_iterations: int = 0, patchcore_baseline: bool = True, foreground: bool = False,
                    retained: tuple[float, float] = (0.0, 0.0)) -> tuple[list[Stage], tuple[float, float]]:
    """SemiREST's stages (one setting of :func:`~cutswap_lib.runs.semirest_tables.run_semirest_category`).

    ``cfg``: the setting's :class:`~cutswap_lib.semirest.model.SemiRESTConfig`; ``n_real``:
    labelled anomalous images (b3's pool); ``mask_pixels``: pixels of the test masks kept at
    their native size (None: ``image_size`` squared); ``foreground``: Otsu footprints are kept
    (MVTec AD's object categories); ``semi_iterations``: a MixMatch fine-tune
    after training (its step costs :data:`SEMI_STEP_FACTOR` plain steps); ``retained``: (host,
    device) bytes of an earlier setting's model the run keeps (the unsupervised one, which the
    semi setting fine-tunes). Returns the stages and this model's own (host, device) bytes.
    """
    from ..semirest.token_augment import search_chunk
    from ..semirest.windows import window_corners

    s2 = image_size * image_size
    led = _Ledger(on_gpu)
    led.host, led.device = retained
    images = 1.0 * (n_train + n_test) * 3 * s2 + 4.0 * n_test * s2  # load_split: uint8 images, float masks
    load = led.stage("load", {}, host=images + 4.0 * n_train * s2)  # the training split's (empty) masks, dropped
    led.add(images + 4.0 * (mask_pixels if mask_pixels is not None else n_test * s2), "host")  # eval masks
    led.add(1.0 * n_train * s2 * foreground, "host")  # Otsu footprints (MVTec AD objects), bool
    tr = backbone_trace(backbone, image_size, FEATURE_BATCH, 1024)
    (h, w), d = tr["grid"], tr["d"]
    hw, rows = h * w, n_train * h * w
    t = max(1, round(coreset * rows))  # bank rows
    pcf32, conv_img = 4.0 * rows * d, tr["flops"] / FEATURE_BATCH
    before = (led.host, led.device)
    stages = [load, led.stage("weights", {}, host=tr["built"])]
    led.add(tr["weights"], "device")
    budget = cfg.pool_budget_gb * 2**30
    keep = 4 if pcf32 <= budget else 2 if pcf32 / 2 <= budget else 0  # bytes per PCF value kept
    half_proj = not on_gpu and rows * 128 * 4 > 32 * 2**20
    held = keep == 4  # _normal_pool: a float32 buffer of every PCF; past the budget they are recomputed per pass
    led.add(pcf32 if held else 0.0, "host")
    stages.append(led.stage("features", {"conv": conv_img * n_train}, device=tr["activations"]))
    proj = 4.0 * rows * 128 / (2 if half_proj else 1)
    again = 0 if held else 1 + half_proj  # backbone passes the coreset and the gathering of the bank add
    stages.append(led.stage("memory bank", {"mm": 2.0 * rows * d * 128 + 2.0 * rows * 128 * t,
                                            "conv": conv_img * n_train * again},
                            device=proj + 12.0 * rows + 4.0 * t * d + (0 if held else tr["activations"])))
    led.add(4.0 * t * d, "device")
    search = search_chunk(t, SEARCH_CHUNK) * t * 9.0  # cdist block (float32), same-image mask (bool), masked copy
    led.add(rows * 36.0, "host")  # neighbours (int64 x 3), labels (int64), shares (float32)
    led.add(0.0 if held else rows * d * keep, "host")  # the float16 pool, filled by the neighbours' pass
    stages.append(led.stage("pools", {"mm": 2.0 * (rows + n_real * hw) * t * d,
                                      "conv": conv_img * (n_train * (not held) + n_real)},
                            device=search + 4.0 * FEATURE_BATCH * hw * d + (0 if held else tr["activations"])))
    led.add(4.0 * n_real * (3 * s2 + s2 + hw * d) + rows * 36.0 * n_real / max(1, n_train), "host")
    q = len(window_corners(h, w, cfg.mu, cfg.step))
    n_windows = (cfg.b1 + cfg.b2 + cfg.b3) * max(1, round(cfg.window_fraction * q))
    chunks = max(1, min(cfg.window_chunks, n_windows))  # SemiRESTConfig.window_chunks: parts of a step
    step = swin_trace(d, cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.window, cfg.mu, -(-n_windows // chunks), True,
                      cfg.checkpoint_blocks)  # the largest part
    led.add(step["weights"] * 2, "device")  # the Swin and its EMA copy (gradients: in the trace, then kept)
    fresh = cfg.b2 + (0 if keep else cfg.b1)  # backbone passes per iteration
    per_iter = {"swin": step["flops"] * n_windows / -(-n_windows // chunks), "conv": conv_img * fresh,
                "mm": 2.0 * cfg.b2 * hw * t * d}
    tokens = 4.0 * (cfg.b1 + cfg.b2 + cfg.b3) * max(hw, cfg.mu ** 2) * d * 3  # PCFs, residuals, windows
    total = cfg.iterations + semi_iterations * SEMI_STEP_FACTOR
    stages.append(led.stage("training", {k: v * total for k, v in per_iter.items()},
                            device=step["activations"] + 2 * step["weights"] + tokens + search
                            + (backbone_trace(backbone, image_size, fresh, 1024)["activations"] if fresh else 0)
                            + 2 * step["weights"] * bool(semi_iterations)))
    led.add(step["weights"], "device")  # the last step's gradients stay on the model
    q_inf = len(window_corners(h, w, cfg.mu, cfg.inference_step or cfg.step))
    n_inf = min(WINDOW_BATCH, FEATURE_BATCH * q_inf)
    fwd = swin_trace(d, cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.window, cfg.mu, n_inf, False)
    windows = 4.0 * FEATURE_BATCH * q_inf * cfg.mu ** 2 * d  # extract_windows of one batch
    stages.append(led.stage("inference", {"conv": conv_img * n_test, "mm": 2.0 * n_test * hw * t * d,
                                          "swin": fwd["flops"] / n_inf * q_inf * n_test},
                            device=max(tr["activations"], fwd["activations"] + windows)
                            + 12.0 * FEATURE_BATCH * hw * d + (0 if on_gpu else 4.0 * t * d)))
    if patchcore_baseline:  # the table's PatchCore column: the same extractor, its own (wider) bank
        stages += patchcore_stages(n_train, n_test, image_size, backbone, coreset, on_gpu=on_gpu,
                                   ledger=_copy(led))
    return stages, (led.host - before[0], led.device - before[1])


def _copy(ledger: _Ledger) -> _Ledger:
    out = _Ledger(ledger.on_gpu)
    out.host, out.device = ledger.host, ledger.device
    return out


def summary(stages: list[Stage], device: str = "cpu", rates: dict | None = None) -> dict:
    """JSON keys for a dry-run line: per stage host / device GB and time; the peaks; CPU and T4 seconds."""
    on_gpu = device.startswith("cuda")
    t4 = {k: T4_FP32_FLOPS * T4_UTILISATION for k in ("conv", "swin", "mm")}
    out = {"plan_stages": {s.name: {"host_gb": round(s.host / GB, 3),
                                    "device_gb": round(s.device / GB, 3) if on_gpu else None,
                                    "t4_s_estimate": round(s.seconds(t4), 1),
                                    **({"cpu_s_estimate": round(s.seconds(rates), 1)} if rates else {})}
                           for s in stages},
           "plan_host_peak_gb": round(max(s.host for s in stages) / GB, 3),
           "plan_device_peak_gb": round(max(s.device for s in stages) / GB, 3) if on_gpu else None,
           "plan_t4_s_estimate": round(sum(s.seconds(t4) for s in stages), 1),
           "plan_t4_note": f"FLOPs / ({T4_FP32_FLOPS / 1e12:.1f} TFLOPS fp32 x {T4_UTILISATION}): an estimate"}
    if rates:
        out["plan_cpu_s_estimate"] = round(sum(s.seconds(rates) for s in stages), 1)
    return out


def device_limits(device: str | None) -> tuple[str, float, float | None]:
    """(device name, host bytes, device bytes or None) of this machine's chosen device."""
    host = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    name = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        return name, host, float(torch.cuda.get_device_properties(torch.device(name)).total_memory)
    return name, host, None


def warn_if_too_big(line: dict, device: str | None, what: str) -> None:
    """One line on stderr when a plan's peak passes this machine's host or device memory."""
    name, host, dev = device_limits(device)
    if line["plan_host_peak_gb"] * GB > host:
        print(f"warning: {what}: the plan needs about {line['plan_host_peak_gb']:.1f} GB of host memory, this "
              f"machine has {host / GB:.1f} GB: the run cannot fit", file=sys.stderr)
    if dev is not None and (line["plan_device_peak_gb"] or 0) * GB > dev:
        print(f"warning: {what}: the plan needs about {line['plan_device_peak_gb']:.1f} GB on {name}, which has "
              f"{dev / GB:.1f} GB: the run cannot fit", file=sys.stderr)


def semirest_plan_keys(n_train: int, n_test: int, image_size: int, cfg, *, backbone: str, coreset: float,
                       device: str | None, n_real: int = 0, mask_pixels: float | None = None,
                       semi_iterations: int = 0, retained=(0.0, 0.0), rates: dict | None = None):
    """The planner's keys of one ``semirest-table --dry-run`` line, and the model's own bytes (see :func:`semirest_stages`)."""
    name = device or ("cuda" if torch.cuda.is_available() else "cpu")
    stages, own = semirest_stages(n_train, n_test, image_size, cfg, backbone=backbone, coreset=coreset,
                                  on_gpu=name.startswith("cuda"), n_real=n_real, mask_pixels=mask_pixels,
                                  semi_iterations=semi_iterations, retained=retained)
    return {"plan_device": name, **summary(stages, name, rates if rates is not None else cpu_rates())}, own


def cutswap_plan_keys(n_train: int, n_test: int, image_size: int, encoder: str, coreset: float, *,
                      device: str | None, finetune_images: int = 0, train_size: int | None = None,
                      batch: int = 0, steps: int = 0, levels: int = 5, cpu_train_s: float | None = None) -> dict:
    """The planner's keys of one ``cutswap-table --dry-run`` line: the 3-way fine-tune and PatchCore on its encoder.

    Training: ``batch`` images per step (3 x batch size x triplets), forward and backward of
    the encoder (traced) with its weights, gradients and SGD momentum, the fine-tuning images and
    their ``levels`` saliency maps on the host; ``steps`` in all. Its CPU time is the
    ``cpu_train_s`` that :func:`~.cutswap_encoders.estimate_epoch_seconds` gives (timed on a GPU,
    counted on a CPU).
    """
    name = device or ("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu, stages = name.startswith("cuda"), []
    if batch:
        t = train_size or image_size
        tr = backbone_trace(encoder, t, batch, None, None, True)
        led = _Ledger(on_gpu)
        led.add(4.0 * finetune_images * (3 + levels) * t * t, "host")
        stages.append(led.stage("training", {"conv": tr["flops"] * steps},
                                device=3 * tr["weights"] + tr["activations"], host=tr["built"]))
    stages += patchcore_stages(n_train, n_test, image_size, encoder, coreset, on_gpu=on_gpu)
    out = {"plan_device": name, **summary(stages, name, None)}
    if cpu_train_s is not None:  # the step estimate, plus PatchCore's FLOPs at this CPU's rate
        rates = cpu_rates()
        out["plan_cpu_s_estimate"] = round(cpu_train_s + sum(s.seconds(rates) for s in stages
                                                               if s.name != "training"), 1)
    return out
