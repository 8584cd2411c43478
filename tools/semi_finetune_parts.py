"""Take the semi-supervised fine-tune apart: one part changed at a time, all from the same unsupervised model.

``semirest-table`` reports the semi fine-tune and ``SemiREST not fine-tuned`` (the model it starts
from, on the same test images). When the fine-tune scores below its start, this tool says which of
its parts costs the AP. Each variant of ``VARIANTS`` changes exactly the :class:`MixMatchConfig`
fields it names against the fine-tune of ``SemiRunSettings.small()`` (the ``known`` row changes
none); everything else (the unsupervised model, the 10 labelled images and their boxes, the test
images) is shared. One ``run_semirest_category`` call runs them all: the unsupervised model trains
once per seed (its state kept in ``--work``, so a rerun reuses it), PatchCore and the model before
fine-tuning are evaluated once, and each variant then costs one fine-tune and its evaluation (about
7 minutes per seed with one thread at 224 px).

Notebook 06 reports it on ``elpv_cracks`` (data/README)::

    .venv/bin/python tools/semi_finetune_parts.py --data-root data/elpv_drawn --category elpv_cracks --seed 0

One line per variant: pixel AP / PRO / pixel AUROC, with the model before fine-tuning and PatchCore
on the same test images first. The work folder holds training states (a few hundred MB); delete it
when done.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from cutswap_lib.runs.semirest_tables import NOT_FINETUNED, SemiRunSettings, run_semirest_category, semi_config
from cutswap_lib.semirest.mixmatch import MixMatchConfig

VARIANTS = {
    "known": {},  # the --small fine-tune as it is: guess_pivot "known"
    "no-box-insides": {"unknown_tokens": False},  # normal, synthetic and outside-box tokens only
    "eps-plus-50": {"eps_plus": 0.5},  # synthetic anomalies labelled at the unsupervised eps+
    "no-dropout": {"dropout": 0.0},
    "pivot-box": {"guess_pivot": "box"},
    "pivot-half": {"guess_pivot": "half"},  # Algorithm 1 as printed
    "upsilon-50": {"upsilon": 0.5},  # Eq. (15) as printed: a block a box covers by at most half is normal
}


START = "square+PCF+bagging+kNN"  # the unsupervised model every variant fine-tunes (Table 6's full model)


def run_settings(seed: int, upsilon: float | None = None) -> SemiRunSettings:
    """``SemiRunSettings.small()`` for one seed: the table's unsupervised model and its fine-tune.

    ``upsilon``: Eq. (15)'s threshold for every variant (None: the table's, 0 with ``--small``).
    """
    settings = dataclasses.replace(SemiRunSettings.small(), seeds=(seed,))
    if upsilon is not None:
        settings.mixmatch = dataclasses.replace(settings.mixmatch, upsilon=upsilon)
    return settings.validate()


def variant_config(name: str, seed: int = 0, dataset: str = "mvtec", upsilon: float | None = None) -> MixMatchConfig:
    """The fine-tune of variant ``name``: the table's, with ``VARIANTS[name]`` changed (validated)."""
    return semi_config(dataset, run_settings(seed, upsilon), VARIANTS[name]).validate()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", type=Path, required=True, help="MVTec-layout folder holding --category")
    p.add_argument("--category", required=True)
    p.add_argument("--dataset", default="mvtec", choices=("mvtec", "btad", "ksdd2"), help="whose protocol to apply")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS))
    p.add_argument("--upsilon", type=float, default=None,
                   help="Eq. 15's threshold for every variant (default: the table's, 0 with --small; 0.5 is the paper's)")
    p.add_argument("--work", type=Path, default=Path("results/work/semi_finetune_parts"),
                   help="training states, so the unsupervised model trains once per seed")
    args = p.parse_args(argv)
    folder = args.data_root / args.category
    if not (folder / "train").is_dir() or not (folder / "test").is_dir():
        print(f"semi_finetune_parts: {folder} has no train/ and test/ folders (an MVTec-layout category)",
              file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:  # run_settings and run_semirest_category check every value before anything is loaded or trained
        rows = run_semirest_category(args.dataset, args.data_root, args.category, run_settings(args.seed, args.upsilon),
                                     setting_names=("semi",), progress=False, checkpoints=args.work / f"seed{args.seed}",
                                     semi_variants={name: (START, VARIANTS[name]) for name in args.variants})
    except (ValueError, OSError) as err:  # DatasetError is a ValueError
        print(f"semi_finetune_parts: {err}", file=sys.stderr)
        return 2
    for row in rows:
        what = ("patchcore" if row["method"] == "patchcore" else
                NOT_FINETUNED if row["variant"] == NOT_FINETUNED else row["variant"])
        took = f" (fine-tune {row['train_s']:.0f} s)" if what not in ("patchcore", NOT_FINETUNED) else ""
        print(f"seed {args.seed} {what:26s} AP {row['ap']:.3f} PRO {row['pro']:.3f} "
              f"pixel AUROC {row['pixel_auroc']:.3f} n_test {row['n_test']}{took}", flush=True)
    print(f"seed {args.seed}: {time.perf_counter() - t0:.0f} s in all", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
