"""The SemiREST paper's reported numbers, for the reproduction tables' "paper" columns.

Transcribed from Li, Wu, Chen, Wang, Shen, "SemiREST" (text in
``shared/papers/semirest-paper.txt``):

* Table 1 – MVTec AD, unsupervised: SemiREST ("Ours (Un)", the last column) and
  PatchCore (Roth et al. 2022, the first column). The caption says "zero-shot anomaly
  localization", but the text (Sec. 4.4) calls it the unsupervised setting: trained on
  normal images (plus synthetic anomalies) only.
* Table 2 – MVTec AD, "Ours (Sup)" (full pixel supervision) and "Ours (Semi)" (bounding
  boxes), the last two columns; the caption's "few-shot" is the 10-anomalous-image setting.
* Table 3 – BTAD, unsupervised ("Ours (Un)", last column; PatchCore, first column).
* Table 4 – BTAD, supervised and semi-supervised ("Ours (Sup)", "Ours (Semi)").
* Table 5 – KolektorSDD2, unsupervised / supervised / semi-supervised (and PatchCore).
* Table 6 – the ablation on MVTec AD (means only).
* Sec. 4.7 / Fig. 5 – the per-image annotation times.

Every triple is ``(AP, PRO, pixel AUROC)`` – pixel-level average precision, per-region
overlap (FPR up to 0.3) and pixel AUROC – stored as **fractions** (the paper prints
percent: 81.2 is stored as 0.812) so that they compare directly with
:mod:`cutswap_lib.metrics`. The tables below are written in the paper's percent, through
:func:`_pct`, so that each line can be checked against the paper by eye; the module's
names hold the fractions. A cell printed as "∼" (not reported) is ``None``.

Keys are the category names of :data:`cutswap_lib.data.DATASETS` (``"metal_nut"``,
``"01"``, ...); ``"mean"`` is the paper's "Total Average" row (MVTec AD; the texture and
object "Average" rows are in :data:`MVTEC_GROUP_MEANS`) or "Average" row (BTAD).
KolektorSDD2 has a single category, ``"ksdd2"``.
"""

from __future__ import annotations

Triple = tuple[float, float, float]

METRICS = ("ap", "pro", "pixel_auroc")
SETTINGS = ("unsupervised", "supervised", "semi")
METHODS = ("semirest", "patchcore")

MVTEC_TEXTURES = ("carpet", "grid", "leather", "tile", "wood")
MVTEC_OBJECTS = ("bottle", "cable", "capsule", "hazelnut", "metal_nut", "pill", "screw",
                 "toothbrush", "transistor", "zipper")


def _pct(ap: float | None, pro: float | None, auroc: float | None):
    """A triple printed in percent -> fractions (``None`` where the paper prints "∼")."""
    out = tuple(None if v is None else round(v / 100.0, 6) for v in (ap, pro, auroc))
    return None if all(v is None for v in out) else out


def _table(rows: dict) -> dict:
    return {key: _pct(*value) for key, value in rows.items()}


# --- Table 1: MVTec AD, unsupervised -------------------------------------------------
# SemiREST: column "Ours (Un)" (the 11th and last triple of each row).
MVTEC_UNSUPERVISED: dict[str, Triple] = _table({
    "carpet": (84.2, 98.7, 99.6),
    "grid": (65.5, 97.9, 99.5),
    "leather": (79.3, 99.4, 99.8),
    "tile": (96.4, 98.5, 99.7),
    "wood": (79.4, 96.5, 97.7),
    "bottle": (94.1, 98.6, 99.6),
    "cable": (81.1, 95.3, 99.1),
    "capsule": (57.2, 96.9, 98.8),
    "hazelnut": (87.8, 96.1, 99.6),
    "metal_nut": (96.6, 97.5, 99.5),
    "pill": (85.9, 98.4, 99.2),
    "screw": (65.9, 97.9, 99.7),
    "toothbrush": (74.5, 96.2, 99.5),
    "transistor": (79.4, 96.0, 98.0),
    "zipper": (90.2, 98.9, 99.7),
    "mean": (81.2, 97.5, 99.3),  # "Total Average"
})

# PatchCore: column "PatchCore (Roth et al., 2022)" of Table 1 (the first triple of each
# row), as reported by the SemiREST authors – not PatchCore's own paper, which gives no AP.
MVTEC_PATCHCORE: dict[str, Triple] = _table({
    "carpet": (64.1, 95.1, 99.1),
    "grid": (30.9, 93.6, 98.8),
    "leather": (45.9, 97.2, 99.3),
    "tile": (54.9, 80.2, 95.7),
    "wood": (50.0, 88.3, 95.0),
    "bottle": (77.7, 94.7, 98.5),
    "cable": (66.3, 93.2, 98.4),
    "capsule": (44.7, 94.8, 99.0),
    "hazelnut": (53.5, 95.2, 98.7),
    "metal_nut": (86.9, 94.0, 98.3),
    "pill": (77.9, 95.0, 97.8),
    "screw": (36.1, 97.1, 99.5),
    "toothbrush": (38.3, 89.4, 98.6),
    "transistor": (66.4, 92.4, 96.3),
    "zipper": (62.8, 95.8, 98.9),
    "mean": (57.1, 93.1, 98.1),  # "Total Average"
})

# --- Table 2: MVTec AD, supervised and semi-supervised -------------------------------
# Columns "Ours (Sup)" (5th triple) and "Ours (Semi)" (6th and last triple).
MVTEC_SUPERVISED: dict[str, Triple] = _table({
    "carpet": (89.1, 99.1, 99.7),
    "grid": (66.4, 97.0, 99.4),
    "leather": (81.7, 99.7, 99.9),
    "tile": (96.9, 98.9, 99.7),
    "wood": (88.7, 97.9, 99.2),
    "bottle": (93.6, 98.5, 99.5),
    "cable": (89.5, 95.9, 99.2),
    "capsule": (60.0, 97.0, 98.8),
    "hazelnut": (92.2, 98.3, 99.8),
    "metal_nut": (99.1, 98.2, 99.9),
    "pill": (86.1, 98.9, 99.3),
    "screw": (72.1, 98.8, 99.8),
    "toothbrush": (74.2, 97.1, 99.6),
    "transistor": (85.5, 97.8, 98.6),
    "zipper": (91.0, 99.2, 99.7),
    "mean": (84.4, 98.1, 99.5),  # "Total Average" (Table 6 prints PRO 98.2 for this model)
})

MVTEC_SEMI: dict[str, Triple] = _table({
    "carpet": (88.9, 99.1, 99.7),
    "grid": (71.5, 98.5, 99.7),
    "leather": (82.0, 99.6, 99.9),
    "tile": (96.6, 98.7, 99.7),
    "wood": (86.2, 97.1, 98.6),
    "bottle": (93.6, 98.4, 99.5),
    "cable": (86.5, 96.3, 99.3),
    "capsule": (58.4, 97.6, 99.1),
    "hazelnut": (86.0, 97.3, 99.7),
    "metal_nut": (98.3, 98.1, 99.8),
    "pill": (89.6, 98.9, 99.5),
    "screw": (67.9, 98.6, 99.8),
    "toothbrush": (73.3, 96.7, 99.6),
    "transistor": (86.4, 97.9, 98.6),
    "zipper": (91.3, 99.2, 99.8),
    "mean": (83.8, 98.1, 99.5),  # "Total Average"
})

# The texture / object "Average" rows of Tables 1 and 2 (SemiREST; PatchCore for Table 1).
MVTEC_GROUP_MEANS: dict[str, dict[str, Triple]] = {
    "unsupervised": _table({"texture": (81.0, 98.2, 99.3), "object": (81.3, 97.2, 99.3)}),
    "supervised": _table({"texture": (84.7, 98.5, 99.5), "object": (84.3, 98.0, 99.4)}),
    "semi": _table({"texture": (85.0, 98.6, 99.5), "object": (83.2, 97.9, 99.5)}),
    "patchcore": _table({"texture": (49.2, 90.9, 97.6), "object": (61.1, 94.2, 98.4)}),
}

# --- Tables 3 and 4: BTAD -------------------------------------------------------------
# Unsupervised: Table 3, column "Ours (Un)" (9th and last triple). Supervised and
# semi-supervised are in Table 4 (not Table 3): columns "Ours (Sup)", "Ours (Semi)".
BTAD: dict[str, dict[str, Triple]] = {
    "unsupervised": _table({
        "01": (52.4, 83.9, 97.5),
        "02": (63.1, 61.5, 96.5),
        "03": (50.9, 98.8, 99.7),
        "mean": (55.5, 81.4, 97.9),  # "Average"
    }),
    "supervised": _table({
        "01": (81.3, 93.1, 99.0),
        "02": (84.7, 81.4, 98.1),
        "03": (79.9, 99.4, 99.9),
        "mean": (82.0, 91.3, 99.0),
    }),
    "semi": _table({
        "01": (69.8, 86.2, 98.2),
        "02": (81.2, 69.0, 97.9),
        "03": (75.6, 99.6, 99.9),
        "mean": (75.5, 84.9, 98.7),
    }),
}

# Table 3, column "PatchCore (Roth et al., 2022)" (first triple).
BTAD_PATCHCORE: dict[str, Triple] = _table({
    "01": (47.1, 78.4, 96.5),
    "02": (56.3, 54.0, 94.9),
    "03": (51.2, 96.4, 99.2),
    "mean": (51.5, 76.3, 96.9),
})

# --- Table 5: KolektorSDD2 (one category, no per-category rows) ------------------------
# Rows "Ours(Un)", "Ours(Sup)", "Ours(Semi)"; columns AP, PRO, AUROC. Supervised and
# semi-supervised train on the normal images plus 10 defective ones (Sec. 4.6).
KSDD2: dict[str, Triple] = {
    "unsupervised": _pct(72.8, 98.1, 99.4),
    "supervised": _pct(73.6, 96.7, 98.0),
    "semi": _pct(72.1, 97.5, 99.1),
}
KSDD2_PATCHCORE: Triple = _pct(64.1, 88.8, 97.1)  # row "PatchCore(Roth et al., 2022)"

# --- Table 6: ablation on MVTec AD (means) ------------------------------------------
# The text dump prints each row's check marks without their columns (e.g. "Square
# \checkmark \checkmark 79.3/..."). Read here as cumulative from the left – PCF, Bagging,
# k-NN augmentation, MixMatch, Random Dropout – which is the only reading consistent with
# the caption and with the text's "consistent increase ... as more modules are added".
# Likewise rows 1-4 print two triples only: read as Unsupervised and Supervised, the
# Semi-supervised cell blank (the caption: semi-supervised SemiREST inherits PCF, bagging
# and k-NN augmentation from the supervised version, so it starts at row 5). Rows 5-7
# repeat the unsupervised and supervised triples: MixMatch and dropout change only the
# semi-supervised model. The supervised PRO of rows 5-7 (98.2) differs from Table 2's
# "Total Average" (98.1); both are kept as printed.
_MODULES = ("pcf", "bagging", "knn", "mixmatch", "dropout")


def _ablation_row(residual: str, n_modules: int, unsup, sup, semi) -> dict:
    row = {"residual": residual}
    row.update({name: i < n_modules for i, name in enumerate(_MODULES)})
    row.update({"unsupervised": _pct(*unsup) if unsup else None,
                "supervised": _pct(*sup) if sup else None,
                "semi": _pct(*semi) if semi else None})
    return row


ABLATION: list[dict] = [
    _ablation_row("square", 0, (70.5, 95.4, 98.4), (75.1, 96.6, 98.9), None),
    _ablation_row("abs", 0, (69.3, 94.8, 98.3), (76.8, 96.9, 99.0), None),
    _ablation_row("square", 1, (72.4, 95.8, 98.9), (76.4, 96.6, 99.0), None),
    _ablation_row("square", 2, (79.3, 96.9, 98.8), (83.4, 98.2, 99.4), None),
    _ablation_row("square", 3, (81.2, 97.5, 99.3), (84.4, 98.2, 99.5), (80.7, 97.5, 99.3)),
    _ablation_row("square", 4, (81.2, 97.5, 99.3), (84.4, 98.2, 99.5), (82.1, 97.8, 99.4)),
    _ablation_row("square", 5, (81.2, 97.5, 99.3), (84.4, 98.2, 99.5), (83.8, 98.1, 99.5)),
    _ablation_row("abs", 5, (76.4, 96.3, 98.7), (84.9, 98.3, 99.5), (83.2, 98.0, 99.3)),
]

# --- Sec. 4.7 / Fig. 5: annotation time per image, in seconds -------------------------
# "one requires only around 5 seconds for labeling bounding boxes and around 17 seconds
# for generating block-wise labels, on one image. In contrast, the pixel-label consumes
# more than 32 seconds for one image" – so box and block are approximate and pixel is a
# lower bound. Measured on 10 defective images per MVTec AD category, four annotators.
ANNOTATION_SECONDS: dict[str, int] = {"box": 5, "block": 17, "pixel": 32}


# --- lookup ---------------------------------------------------------------------------
_MVTEC = {"unsupervised": MVTEC_UNSUPERVISED, "supervised": MVTEC_SUPERVISED,
          "semi": MVTEC_SEMI}
_DATASETS = ("mvtec", "btad", "ksdd2")


def paper_triple(dataset: str, setting: str, category: str,
                 method: str = "semirest") -> Triple | None:
    """The paper's ``(AP, PRO, pixel AUROC)`` as fractions, or ``None`` where it has none.

    ``dataset`` is ``"mvtec"``, ``"btad"`` or ``"ksdd2"``; ``setting`` is
    ``"unsupervised"``, ``"supervised"`` or ``"semi"``; ``category`` is a registry name or
    ``"mean"`` (for KolektorSDD2, ``"ksdd2"`` and ``"mean"`` are the same cell).
    ``method="patchcore"`` gives the PatchCore column of Tables 1, 3 and 5 (unsupervised
    only; ``None`` for the other settings). Unknown categories give ``None``; unknown
    dataset, setting or method names raise :class:`ValueError`.
    """
    if dataset not in _DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {_DATASETS}")
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; expected one of {SETTINGS}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if method == "patchcore":
        if setting != "unsupervised":
            return None
        if dataset == "ksdd2":
            return KSDD2_PATCHCORE if category in ("ksdd2", "mean") else None
        table = MVTEC_PATCHCORE if dataset == "mvtec" else BTAD_PATCHCORE
        return table.get(category)
    if dataset == "mvtec":
        return _MVTEC[setting].get(category)
    if dataset == "btad":
        return BTAD[setting].get(category)
    return KSDD2[setting] if category in ("ksdd2", "mean") else None
