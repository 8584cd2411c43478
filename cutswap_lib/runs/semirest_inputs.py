"""What a SemiREST run reads besides its normal images: labelled images, boxes, sources of synthetic anomalies.

* which anomalous images a labelled setting takes, and from which split (:func:`labelled_split`,
  :func:`labelled_choice`, :func:`labelled_images`; the split is the dataset protocol's,
  :mod:`.semirest_protocols`);
* box files drawn with notebook 06's widget (:func:`boxes_from_file`, :func:`check_box_files`);
* where synthetic anomalies may land and which textures fill them (:func:`synthetic_foreground`,
  :func:`texture_sources`);
* the test masks at their own size for evaluation (:func:`evaluation_masks`, :func:`select_masks`).

:mod:`.semirest_tables` runs the tables with them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms.functional import resize, to_tensor

from ..data import AnomalyDataset, DatasetError, load_foregrounds, load_split
from ..data.folder import IMAGE_EXTENSIONS, is_image_file, load_mask, load_rgb
from ..semirest.boxes import box_key, load_boxes
from ..semirest.synthetic import otsu_foreground
from .semirest_protocols import MVTEC_OBJECTS


def defect_kinds(paths) -> list[str]:
    """Each test image's defect kind: its folder's name (MVTec's ``test/<kind>/``; ``good`` is normal)."""
    return [Path(p).parent.name for p in paths]


def labelled_split(labels: torch.Tensor, paths: list[str], n: int, seed: int) -> torch.Tensor:
    """Indices ``(n,)`` of anomalous test images for the supervised setting, round robin over defect types."""
    gen = torch.Generator().manual_seed(seed)
    kinds = defect_kinds(paths)
    by_type: dict[str, list[int]] = {}
    for i in torch.randperm(len(paths), generator=gen).tolist():
        if int(labels[i]) == 1:
            by_type.setdefault(kinds[i], []).append(i)
    if sum(map(len, by_type.values())) < n:
        raise ValueError(f"the supervised setting needs {n} anomalous test images, the test set has "
                         f"{sum(map(len, by_type.values()))}")
    chosen, queues = [], [by_type[k] for k in sorted(by_type)]
    while len(chosen) < n:
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(queue.pop(0))
    return torch.tensor(sorted(chosen))


def boxes_from_file(path: Path, test_paths: list[str], size: tuple[int, int]
                    ) -> tuple[torch.Tensor, list[list[tuple[int, int, int, int]]]]:
    """The labelled images named in a box file and their boxes at ``size = (H, W)``.

    Returns the indices ``(n,)`` of those images in ``test_paths`` (in the order of the
    test set) and one list of boxes per image, rescaled from the size they were drawn at.
    Raises with the file's name when it is missing or names an image the test set lacks.
    """
    if not path.is_file():
        raise FileNotFoundError(f"box file {path} does not exist: draw boxes with notebook 06's widget "
                                f"(it saves <category>/boxes.json), or leave out --boxes to derive boxes from masks")
    boxes = load_boxes(path, resize_to=size)  # validated at the size they were drawn at, then rescaled
    keys = {box_key(p): i for i, p in enumerate(test_paths)}
    unknown = [name for name in boxes if name not in keys]
    if unknown:
        raise ValueError(f"{path}: {len(unknown)} image(s) are not in the test set, e.g. {unknown[0]!r} "
                         f"(names are <defect type>/<file>, like {next(iter(keys))!r})")
    if not boxes:
        raise ValueError(f"{path}: the file names no image")
    order = sorted(boxes, key=keys.__getitem__)
    return torch.tensor([keys[name] for name in order]), [boxes[name] for name in order]


def check_box_files(root: Path, categories, settings) -> None:
    """Raise (naming the file) if any category's ``settings.box_file`` is missing or does not fit its test set.

    ``settings``: a :class:`~.semirest_tables.SemiRunSettings` (its ``box_file`` and ``image_size``).

    The file must name at least one anomalous test image and leave at least one out (the
    images it names move to training; the rest are the evaluation set).
    """
    if not settings.box_file:
        return
    for category in categories:
        samples = AnomalyDataset(root, category, "test", image_size=None).samples
        path = root / category / settings.box_file
        chosen, _ = boxes_from_file(path, [str(x.image) for x in samples], (settings.image_size, settings.image_size))
        named = sum(samples[i].label == 1 for i in chosen.tolist())
        anomalous = sum(x.label == 1 for x in samples)
        if named == 0:
            raise ValueError(f"{path} names only good images: boxes label defects, so name anomalous test images")
        if named >= anomalous:
            raise ValueError(f"{path} names all {anomalous} anomalous test images of {category}: none would be "
                             f"left to evaluate; leave some out")


def synthetic_foreground(dataset: str, category: str, train: torch.Tensor, train_paths, size: int,
                         choice: str = "auto") -> tuple[torch.Tensor | None, str]:
    """Where synthetic anomalies may land, ``(N, 1, S, S)`` or None (anywhere), and its name for the table.

    ``"auto"`` (the course's choice): the toy data's own footprints; on MVTec AD's object
    categories :func:`~cutswap_lib.semirest.synthetic.otsu_foreground`; anywhere otherwise
    (textures, BTAD, KSDD2). ``"otsu"``: Otsu's footprint on any category; ``"none"``: anywhere.
    """
    if choice == "none":
        return None, "whole image"
    if choice == "auto" and dataset == "toy":
        return load_foregrounds(train_paths, size), "toy footprints"
    if choice == "otsu" or (dataset == "mvtec" and category in MVTEC_OBJECTS):
        return otsu_foreground(train), "Otsu footprint"
    return None, "whole image"


def texture_sources(dataset: str, root: Path, category: str, size: int, texture_dir, limit: int = 200):
    """Texture images for the synthetic anomalies ``(T, 3, S, S)`` (None: other training images) and their name.

    MemSeg takes its textures from DTD. With ``texture_dir`` (e.g. DTD's ``images/``) up to
    ``limit`` images found under it (sorted, evenly spaced); otherwise the toy data's other
    categories, and on real data the category's other normal training images.
    """
    if texture_dir is not None:
        files = sorted(p for p in Path(texture_dir).rglob("*") if is_image_file(p))
        if not files:
            raise DatasetError(f"no images under texture folder {texture_dir} "
                               f"(extensions {', '.join(IMAGE_EXTENSIONS)})")
        files = files[::max(1, len(files) // limit)][:limit]
        images = torch.stack([resize(to_tensor(load_rgb(f)), [size, size], antialias=True) for f in files])
        return images, f"{len(files)} images of {Path(texture_dir).name}"
    if dataset == "toy":
        return toy_texture_sources(root, category, size), "other toy categories"
    return None, "other normal training images"


def toy_texture_sources(root: Path, category: str, size: int, n: int = 20) -> torch.Tensor | None:
    """Texture sources for synthetic anomalies: normal images of the other toy categories."""
    others = [p for p in sorted(root.iterdir()) if p.is_dir() and p.name != category and (p / "train").is_dir()]
    parts = [load_split(root, p.name, "train", size)[0][:n] for p in others]
    return torch.cat(parts) if parts else None


def labelled_choice(root: Path, category: str, source: str, test_labels, test_paths: list[str], n: int,
                    seed: int) -> tuple[torch.Tensor, list[str]]:
    """Which images a setting labels: indices ``(n,)`` into ``source``'s split and their paths.

    ``source`` "test": the test set (``test_labels``, ``test_paths``); "train_defect": the
    training set's defects, read from the folder listing (no image is decoded here).
    """
    if source == "train_defect":
        samples = AnomalyDataset(root, category, "train_defect", image_size=None).samples
        test_paths, test_labels = [str(x.image) for x in samples], torch.tensor([x.label for x in samples])
    chosen = labelled_split(test_labels, test_paths, n, seed)
    return chosen, [test_paths[i] for i in chosen.tolist()]


def labelled_images(root: Path, category: str, source: str, test, masks, labels, test_paths, n: int, seed: int, size: int):
    """The labelled images of a setting and what stays in the test set.

    Returns ``(images (n, 3, S, S), masks (n, S, S), paths, keep (N_test,) bool)``; ``source``
    "test" takes them from the test set and removes them from it, "train_defect" from the
    training set's defects (only the chosen ones are loaded; the test set stays whole).
    """
    keep = torch.ones(len(test), dtype=torch.bool)
    chosen, paths = labelled_choice(root, category, source, labels, test_paths, n, seed)
    if source == "train_defect":
        ds = AnomalyDataset(root, category, "train_defect", image_size=size)
        items = [ds[i] for i in chosen.tolist()]
        return torch.stack([x[0] for x in items]), torch.stack([x[1][0] for x in items]), paths, keep
    keep[chosen] = False
    return test[chosen], masks[chosen], paths, keep


def evaluation_masks(root: Path, category: str, size: int, masks: torch.Tensor, eval_size: str):
    """Test masks for evaluation and a label for the table.

    ``eval_size="native"``: each mask at its own size, ``(N, H, W)`` when they share one,
    else a list of ``(H_i, W_i)`` masks (the metrics take both); ``"square"``: ``masks``.
    """
    if eval_size == "square":
        return masks, f"square {size}"
    native = []  # the masks only: the images were decoded (and their masks checked) by load_split already
    for sample in AnomalyDataset(root, category, "test", image_size=None).samples:
        if sample.mask is not None:
            native.append(torch.from_numpy(load_mask(sample.mask)).float())
        else:
            with Image.open(sample.image) as image:  # the header gives the size; no pixels are decoded
                native.append(torch.zeros(image.height, image.width))
    sizes = {tuple(m.shape) for m in native}
    if len(sizes) > 1:
        return native, f"native ({len(sizes)} sizes)"
    (h, w), = sizes
    return torch.stack(native), f"native {h}x{w}"


def select_masks(masks, keep: torch.Tensor):
    """``masks[keep]`` for a tensor or a list of per-image masks."""
    if isinstance(masks, list):
        return [m for m, k in zip(masks, keep.tolist()) if k]
    return masks[keep]
