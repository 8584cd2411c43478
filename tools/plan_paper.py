"""The planner's estimate for every MVTec AD category, BTAD and KSDD2 at SemiREST's paper sizes.

``python tools/plan_paper.py [--setting unsupervised|supervised]`` prints one Markdown row per
category: peak device memory (a GPU run: bank, search blocks and Swin on the device) and peak
host memory, and the time per category on a T4 (FLOPs / 8.1 TFLOPS x 0.5: an **estimate**,
see :mod:`cutswap_lib.runs.planner`) and on this machine's CPU (FLOPs / throughputs timed here).
Sizes: :class:`~cutswap_lib.semirest.model.SemiRESTConfig` (512 px, the 1024-channel Swin,
2,000 iterations), WideResNet50 features (d_f = 1024), the protocol's coreset (10 %; KSDD2
0.1 %), the table's PatchCore column included, test masks kept at their native size.

Image counts (not read from the data: it is not on this machine):

* MVTec AD: Bergmann et al., "MVTec AD -- a comprehensive real-world dataset for unsupervised
  anomaly detection", CVPR 2019, Table 1 (train / test images, image side in px).
* BTAD: Mishra et al., "VT-ADL: a vision transformer network for image anomaly detection and
  localization", ISIE 2021 (products 01-03: 400 / 70, 399 / 230, 1,000 / 441 images;
  1600 x 1600, 600 x 600, 800 x 600 px).
* KSDD2: Bozic et al., "Mixed supervision for surface-defect detection", Computers in Industry
  2021; SemiREST Sec. 4.6 quotes the same split: 2,085 normal and 246 defective training
  images, 894 normal and 110 defective test images; about 230 x 630 px.
"""

from __future__ import annotations

import argparse
import sys

from cutswap_lib.runs import planner
from cutswap_lib.semirest.model import SemiRESTConfig

# category: (training images, test images, (height, width) of the native images and masks)
MVTEC = {"bottle": (209, 83, 900), "cable": (224, 150, 1024), "capsule": (219, 132, 1000),
         "carpet": (280, 117, 1024), "grid": (264, 78, 1024), "hazelnut": (391, 110, 1024),
         "leather": (245, 124, 1024), "metal_nut": (220, 115, 700), "pill": (267, 167, 800),
         "screw": (320, 160, 1024), "tile": (230, 117, 840), "toothbrush": (60, 42, 1024),
         "transistor": (213, 100, 1024), "wood": (247, 79, 1024), "zipper": (240, 151, 1024)}
SIZES = {**{("mvtec", c): (n, m, (s, s)) for c, (n, m, s) in MVTEC.items()},
         ("btad", "01"): (400, 70, (1600, 1600)), ("btad", "02"): (399, 230, (600, 600)),
         ("btad", "03"): (1000, 441, (600, 800)), ("ksdd2", "ksdd2"): (2085, 1004, (630, 230))}
COLUMNS = ["dataset", "category", "n_train", "device peak GB", "host peak GB", "peak stage (device)",
           "T4 min (estimate)", "CPU h (estimate)"]


def paper_table(setting: str = "unsupervised", image_size: int = 512) -> list[dict]:
    rates = planner.cpu_rates()
    rows = []
    for (dataset, category), (n_train, n_test, (h, w)) in SIZES.items():
        cfg = SemiRESTConfig() if setting == "unsupervised" else SemiRESTConfig.supervised()
        stages, _ = planner.semirest_stages(n_train, n_test, image_size, cfg, backbone="wide_resnet50_2",
                                            coreset=0.001 if dataset == "ksdd2" else 0.1, on_gpu=True,
                                            n_real=0 if setting == "unsupervised" else 10,
                                            mask_pixels=float(n_test * h * w),
                                            foreground=dataset == "mvtec" and category not in (
                                                "carpet", "grid", "leather", "tile", "wood"))
        line = planner.summary(stages, "cuda", rates)
        worst = max(stages, key=lambda s: s.device)
        rows.append({"dataset": dataset, "category": category, "n_train": n_train,
                     "device peak GB": f"{line['plan_device_peak_gb']:.1f}",
                     "host peak GB": f"{line['plan_host_peak_gb']:.1f}", "peak stage (device)": worst.name,
                     "T4 min (estimate)": f"{line['plan_t4_s_estimate'] / 60:.0f}",
                     "CPU h (estimate)": f"{line['plan_cpu_s_estimate'] / 3600:.1f}"})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=["unsupervised", "supervised"], default="unsupervised")
    parser.add_argument("--image-size", type=int, default=512)
    args = parser.parse_args(argv)
    rows = paper_table(args.setting, args.image_size)
    print("| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in COLUMNS) + " |")
    rates = planner.cpu_rates()
    print(f"\nT4: {planner.T4_FP32_FLOPS / 1e12:.1f} TFLOPS fp32 x utilisation {planner.T4_UTILISATION} (assumed), "
          f"{planner.T4_MEMORY_BYTES / 1e9:.0f} GB; Colab host about {planner.COLAB_HOST_BYTES / 1e9:.0f} GB. "
          f"CPU rates measured here (GFLOP/s): " + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in rates.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
