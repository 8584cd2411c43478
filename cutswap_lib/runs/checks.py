"""Checks a reproduction run makes before any work: settings in range, data that can be evaluated.

A table run trains for minutes to hours before it writes its first row; every check that can
be made from the arguments and the folder listing is made here, first, so that a bad value
ends the run at once with one line naming the argument (``ValueError``) or the folder
(:class:`~cutswap_lib.data.DatasetError`), never after training. The command line turns
these errors into exit code 2; the library's entry points (``cutswap_table``,
``semirest_table``) raise them.
"""

from __future__ import annotations

from pathlib import Path

from ..data import AnomalyDataset, DatasetError

__all__ = ["check_fraction", "check_names", "check_positive", "check_seeds", "check_test_split", "test_counts"]

MIN_IMAGE_SIZE = 32  # a course choice: below it the backbones' stride-8 / 16 maps have under 4 x 4 cells


def check_positive(name: str, value, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``, else ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_fraction(name: str, value) -> float:
    """``value`` as a float in (0, 1], else ValueError naming ``name``."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}") from None
    if not 0.0 < x <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return x


def check_names(kind: str, names, allowed) -> list[str]:
    """``names`` as a non-empty list of members of ``allowed``, else ValueError naming ``kind``."""
    names = list(names or ())
    if not names:
        raise ValueError(f"{kind} must name at least one of " + ", ".join(map(str, allowed)))
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ValueError(f"unknown {kind[:-1] if kind.endswith('s') else kind} {unknown[0]!r}; "
                         f"choose from {tuple(allowed)}")
    return names


def check_seeds(seeds) -> tuple[int, ...]:
    """Seeds as a non-empty tuple of distinct non-negative ints, else ValueError."""
    seeds = tuple(seeds)
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    for s in seeds:
        check_positive("each seed", s, minimum=0)
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct (a repeated seed counts one run twice), got {list(seeds)}")
    return seeds


def test_counts(root: Path, category: str) -> tuple[int, int]:
    """(normal, anomalous) test images of a category, from the folder listing (no image is read)."""
    samples = AnomalyDataset(root, category, "test", image_size=None).samples
    anomalous = sum(s.label == 1 for s in samples)
    return len(samples) - anomalous, anomalous


def check_test_split(root: Path, category: str, held_out: int = 0) -> tuple[int, int]:
    """Raise :class:`DatasetError` unless the test set has normal and anomalous images left to evaluate.

    ``held_out`` anomalous test images move to training (the supervised settings); at least
    one must remain for the image AUROC, pixel AP and PRO to be defined. Also checks that the
    training set exists (:class:`AnomalyDataset` raises on an empty one).
    """
    AnomalyDataset(root, category, "train", image_size=None)
    normal, anomalous = test_counts(root, category)
    folder = Path(root) / category / "test"
    if normal == 0:
        raise DatasetError(f"{folder} has no good/ images: image AUROC needs normal test images")
    if anomalous == 0:
        raise DatasetError(f"{folder} has no defect folders with images: nothing to detect")
    if held_out >= anomalous:
        raise DatasetError(f"{folder} has {anomalous} anomalous images; {held_out} labelled for training "
                           f"would leave none to evaluate (use --labelled below {anomalous})")
    return normal, anomalous
