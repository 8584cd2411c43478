"""Benchmark: peak memory of ``semirest-table`` on real images against the number of training images.

Not part of the test run (pytest collects ``test_*.py`` only). Run it with

    OMP_NUM_THREADS=1 .venv/bin/python tests/benchmarks/bench_semirest_real_memory.py            # 8 / 16 / 24 images
    OMP_NUM_THREADS=1 .venv/bin/python tests/benchmarks/bench_semirest_real_memory.py --quick    # 2 / 4, 128 px, 1 iteration
    OMP_NUM_THREADS=1 .venv/bin/python tests/benchmarks/bench_semirest_real_memory.py --repeats 3 --root /tmp/elpv_mvtec

Issue 17 ("What it must show: On real images"): the command

    python -m cutswap_lib semirest-table --backbone wide_resnet50_2 --weights random --image-size 256
        --iterations 2 --settings unsupervised

on an MVTec-layout category of 8 and of 24 real training images must grow the process's peak
memory by at most 6 MB per added training image. This machine has no MVTec AD, so the category is
written from the elpv dataset (the PyPI package ``elpv-dataset``, :mod:`cutswap_lib.data.elpv`:
real 300 x 300 electroluminescence photographs of monocrystalline solar cells) in MVTec layout,
one category per point, ``<root>/elpv_mono_<N>/``:

* ``train/good/``: the first N normal (probability 0) mono cells of ``labels.csv``;
* ``test/good/``: the last 4 normal mono cells, ``test/crack/``: the first 4 defective mono
  cells (probability >= 2/3). The test set is the same for every N: only training changes.

PLACEHOLDER MASKS. elpv has image-level labels only, no pixel masks; the command needs one per
defect image, so ``ground_truth/crack/<stem>_mask.png`` is a centred square covering 1/4 of the
cell, whatever the crack looks like. The test metrics (AP, PRO, AUROC) are therefore meaningless;
this benchmark reports memory only and never prints them (each run's output goes to its log).

Every point runs the command above, plus ``--dataset mvtec --data-root <root> --categories
elpv_mono_<N> --results <tmp> --seeds 0``, in a fresh process, under ``OMP_NUM_THREADS`` from
the environment (1 when unset). The process is this file's ``--worker``, which runs the module as
``python -m`` would (``runpy``) and reports ``ru_maxrss``: the peak resident memory of the whole
command (torch, the backbone, the images, PatchCore's bank, the pools, the Swin's training, the
checkpoints, inference). A thread samples it every 0.1 s and, each time it has grown, notes the
innermost ``cutswap_lib`` frames of the main thread: the "peak set in" column says where the
final peak was reached, "before training" is the peak just before the first Swin step (what the
images, the bank and the pools set). ``--repeats R`` runs each point R times and keeps the least
peak (the training step's peak varies from run to run by 100 MB or more). The last lines are the
slopes between the first and last N, MB per added image, against the issue's 6 MB target.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import runpy
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

CATEGORY = "elpv_mono"
DEFECT = "crack"
TARGET_MB = 6.0  # issue 17: at most 6 MB of peak memory per added training image
COMMAND = ["semirest-table", "--backbone", "wide_resnet50_2", "--weights", "random", "--image-size", "256",
           "--iterations", "2", "--settings", "unsupervised"]
QUICK = {"--image-size": "128", "--iterations": "1"}
PLACEHOLDER = "placeholder masks: the test metrics are meaningless; this benchmark reports memory only"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --------------------------------------------------------------------------- the folder

def write_category(root, n_train: int, category: str = f"{CATEGORY}_8", n_test_good: int = 4,
                   n_test_defect: int = 4) -> Path:
    """Write an MVTec-layout category of elpv mono cells under ``root/category``; return that folder.

    ``train/good``: the first ``n_train`` normal mono cells of ``labels.csv``; ``test/good``: the
    last ``n_test_good`` normal mono cells (the same for every ``n_train``); ``test/crack``: the
    first ``n_test_defect`` defective ones (probability >= 2/3), each with a PLACEHOLDER mask
    (:func:`cutswap_lib.data.elpv.write_elpv_mvtec`: elpv has no pixel masks). The cells' PNG
    files are copied as they are (300 x 300, 8-bit gray). An existing folder of that name is replaced.
    """
    import torch

    from cutswap_lib.data.elpv import ElpvSplit, elpv_labels, write_elpv_mvtec

    paths, probs, types = elpv_labels()
    mono = types == "mono"
    normal = np.flatnonzero(mono & (probs == 0))
    defect = np.flatnonzero(mono & (probs >= 2 / 3 - 1e-9))
    if n_train < 1 or n_train + n_test_good > len(normal) or n_test_defect > len(defect):
        raise ValueError(f"elpv has {len(normal)} normal and {len(defect)} defective mono cells; asked for "
                         f"{n_train} + {n_test_good} normal and {n_test_defect} defective")
    test = np.r_[normal[len(normal) - n_test_good:], defect[:n_test_defect]]
    labels = np.r_[np.zeros(n_test_good, np.int64), np.ones(n_test_defect, np.int64)]
    split = ElpvSplit(torch.from_numpy(normal[:n_train]), torch.from_numpy(test), torch.from_numpy(labels))
    return write_elpv_mvtec(root, split, category=category, defect=DEFECT)


# --------------------------------------------------------------------------- one point, in a fresh process

def _where(frame) -> str:
    """The innermost three ``cutswap_lib`` frames of ``frame``'s stack, outermost first (``module:function:line``)."""
    found = []
    while frame is not None and len(found) < 3:
        name = frame.f_code.co_filename.replace(os.sep, "/")
        if "/cutswap_lib/" in name and not name.endswith("cutswap_lib/__main__.py"):
            module = name.rsplit("/cutswap_lib/", 1)[1].removesuffix(".py").replace("/", ".")
            found.append(f"{module}:{frame.f_code.co_name}:{frame.f_lineno}")
        frame = frame.f_back
    return " < ".join(found) or "(outside cutswap_lib: imports, start-up)"


def worker(report: str, argv: list[str]) -> None:
    """Run ``python -m cutswap_lib *argv`` here; write the peak memory and where it grew to ``report`` (JSON)."""
    main_id, events, done = threading.get_ident(), [], threading.Event()

    def sample():
        last = 0.0
        t0 = time.perf_counter()
        while not done.wait(0.1):
            peak = _peak_mb()
            if peak > last + 1:
                frame = sys._current_frames().get(main_id)
                events.append({"t": time.perf_counter() - t0, "mb": peak, "where": _where(frame)})
                last = peak

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    sys.argv = ["cutswap_lib", *argv]
    code = 0
    try:
        runpy.run_module("cutswap_lib", run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        done.set()
        thread.join()
        Path(report).write_text(json.dumps({"peak_mb": _peak_mb(), "exit": code, "events": events}))
    sys.exit(code)


def stages(events: list[dict], top: int = 4) -> list[tuple[str, float, float]]:
    """``(where, MB it added, peak MB after it)`` for the ``top`` places that grew the peak most, in run order."""
    gains, order, before = {}, [], 0.0
    for e in events:
        key = e["where"]
        if key not in gains:
            gains[key], order = [0.0, 0.0], order + [key]
        gains[key][0] += e["mb"] - before
        gains[key][1] = e["mb"]
        before = e["mb"]
    best = sorted(order, key=lambda k: -gains[k][0])[:top]
    return [(k, gains[k][0], gains[k][1]) for k in order if k in best]


def before_training(events: list[dict]) -> float | None:
    """The peak (MB) before the first SemiREST training step: what the data, bank and pools set, without the Swin."""
    first = next((i for i, e in enumerate(events) if "train_step" in e["where"]), None)
    return None if not first else events[first - 1]["mb"]


def run_point(root: Path, n: int, command: list[str], env: dict) -> dict:
    """Write the category of ``n`` training cells, run the command on it in a fresh process, return its figures."""
    category = f"{CATEGORY}_{n:03d}"
    write_category(root, n, category)
    results = root / f"results_{n:03d}"
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir()
    report, log = results / "rss.json", results / "output.log"
    argv = [*command, "--dataset", "mvtec", "--data-root", str(root), "--categories", category,
            "--results", str(results), "--seeds", "0"]
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, __file__, "--worker", str(report), "--", *argv],
                              stdout=out, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode or not report.is_file():
        tail = log.read_text()[-3000:]
        sys.exit(f"{n} images: the command failed (exit {proc.returncode}); end of {log}:\n{tail}")
    got = json.loads(report.read_text())
    return {"images": n, "peak_mb": got["peak_mb"], "before_train_mb": before_training(got["events"]),
            "wall_s": wall, "events": got["events"],
            "argv": argv, "log": str(log)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 and 4 images at 128 px, 1 iteration: a smoke run")
    parser.add_argument("--images", type=int, nargs="+", default=None, help="training images per point (8 16 24)")
    parser.add_argument("--root", type=Path, default=None, help="folder for the categories and results "
                        "(default: a temporary folder, deleted afterwards)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per point; the least peak is kept (1)")
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":  # --worker REPORT -- ARGS...: one point, not parsed here
        worker(sys.argv[2], sys.argv[4:] if sys.argv[3:4] == ["--"] else sys.argv[3:])
        return
    args = parser.parse_args()
    images = sorted(args.images or ([2, 4] if args.quick else [8, 16, 24]))
    command = list(COMMAND)
    if args.quick:
        for flag, value in QUICK.items():
            command[command.index(flag) + 1] = value
    threads = os.environ.get("OMP_NUM_THREADS", "1")
    env = {**os.environ, "OMP_NUM_THREADS": threads}
    root = args.root or Path(tempfile.mkdtemp(prefix="bench_semirest_real_"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"python -m cutswap_lib {' '.join(command)} --dataset mvtec --data-root {root} "
          f"--categories {CATEGORY}_<N> --results <tmp> --seeds 0")
    print(f"elpv mono cells in MVTec layout: N training, 4 + 4 test; OMP_NUM_THREADS={threads}; "
          f"one fresh process per point")
    print(f"*** {PLACEHOLDER} ***\n", flush=True)
    try:
        points = []
        for n in images:
            runs = []
            for _ in range(max(1, args.repeats)):
                runs.append(run_point(root, n, command, env))
                print(f"  {n} images: ru_maxrss {runs[-1]['peak_mb']:.0f} MB, {runs[-1]['wall_s']:.0f} s",
                      file=sys.stderr, flush=True)
            points.append({**min(runs, key=lambda r: r["peak_mb"]), "peaks": [r["peak_mb"] for r in runs]})
    finally:
        if args.root is None and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print("| training images | peak RSS (MB) | peak RSS before training (MB) | wall (s) | peak set in |")
    print("|---|---|---|---|---|")
    for p in points:
        where = p["events"][-1]["where"] if p["events"] else "?"
        before = "?" if p["before_train_mb"] is None else f"{p['before_train_mb']:.0f}"
        print(f"| {p['images']} | {p['peak_mb']:.0f} | {before} | {p['wall_s']:.0f} | {where} |")
    if args.repeats > 1:
        print("\nleast of " + f"{args.repeats} runs per point; all peaks (MB): "
              + "; ".join(f"{p['images']}: " + ", ".join(f"{m:.0f}" for m in p["peaks"]) for p in points))
    for p in points:
        print(f"\n{p['images']} images, where the peak grew most (MB added, peak after):")
        for where, gain, after in stages(p["events"]):
            print(f"  +{gain:6.0f} -> {after:6.0f}  {where}")
    if len(points) > 1:
        first, last = points[0], points[-1]
        slope = (last["peak_mb"] - first["peak_mb"]) / (last["images"] - first["images"])
        print(f"\nMB per added training image (slope from {first['images']} to {last['images']}): {slope:.1f} "
              f"(target <= {TARGET_MB:.0f}: {'holds' if slope <= TARGET_MB else 'FAILS'})")
        if first["before_train_mb"] is not None and last["before_train_mb"] is not None:
            pre = (last["before_train_mb"] - first["before_train_mb"]) / (last["images"] - first["images"])
            print(f"  before training (data, bank, pools; no Swin step): {pre:.1f} MB per added image")
    print(f"\n*** {PLACEHOLDER} ***")
    if args.root is not None or args.keep:
        print(f"categories, results and each run's log under {root}")


if __name__ == "__main__":
    main()
