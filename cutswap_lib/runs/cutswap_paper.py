"""The CutSwap paper's reported numbers, for the reproduction tables' "paper" columns.

Transcribed from Qin, Gu, Yu, Zhang, "CutSwap", Signal, Image and Video Processing 18
(2024): Tables I-IV (per category, PatchCore at coreset 0.001 and 0.01; image and
pixel AUROC of CutPaste + PC, ResNet18 + PC, CutSwap + PC) and the ablations of
Tables V-VIII (MVTec AD mean, coreset 0.001 unless stated). Keys are the datasets'
folder names; ``"mean"`` is the paper's "Average" row.
"""

# (CutPaste+PC image, pixel, ResNet18+PC image, pixel, CutSwap+PC image, pixel)
METHOD_COLUMNS = ("cutpaste", "resnet18", "cutswap")

TABLES = {
    ("mvtec", 0.001): {
    "bottle": (1.000, 0.952, 1.000, 0.972, 1.000, 0.975),
    "cable": (0.934, 0.936, 0.945, 0.948, 0.957, 0.949),
    "capsule": (0.812, 0.895, 0.957, 0.969, 0.945, 0.970),
    "carpet": (0.846, 0.976, 0.987, 0.986, 0.975, 0.988),
    "grid": (0.991, 0.938, 0.931, 0.925, 0.993, 0.940),
    "hazelnut": (0.990, 0.973, 1.000, 0.978, 1.000, 0.977),
    "leather": (1.000, 0.989, 1.000, 0.988, 1.000, 0.987),
    "metal_nut": (0.918, 0.938, 0.951, 0.949, 0.972, 0.957),
    "pill": (0.847, 0.866, 0.895, 0.949, 0.940, 0.928),
    "screw": (0.696, 0.867, 0.675, 0.807, 0.732, 0.832),
    "tile": (0.999, 0.920, 0.982, 0.921, 0.983, 0.913),
    "toothbrush": (0.953, 0.939, 0.914, 0.960, 0.917, 0.977),
    "transistor": (0.938, 0.914, 0.976, 0.927, 0.944, 0.929),
    "wood": (0.994, 0.932, 0.990, 0.919, 0.999, 0.927),
    "zipper": (0.998, 0.980, 0.975, 0.975, 0.975, 0.960),
    "mean": (0.928, 0.934, 0.945, 0.945, 0.955, 0.947),
},  # Table I
    ("mvtec", 0.01): {
    "bottle": (1.000, 0.957, 1.000, 0.975, 0.999, 0.979),
    "cable": (0.981, 0.968, 0.986, 0.976, 0.995, 0.977),
    "capsule": (0.916, 0.960, 0.956, 0.987, 0.947, 0.984),
    "carpet": (0.861, 0.980, 0.987, 0.987, 0.980, 0.990),
    "grid": (0.994, 0.951, 0.949, 0.961, 0.988, 0.948),
    "hazelnut": (1.000, 0.976, 1.000, 0.982, 0.998, 0.980),
    "leather": (1.000, 0.989, 1.000, 0.989, 1.000, 0.986),
    "metal_nut": (0.951, 0.967, 0.991, 0.976, 0.998, 0.978),
    "pill": (0.895, 0.913, 0.948, 0.970, 0.960, 0.962),
    "screw": (0.848, 0.970, 0.949, 0.985, 0.871, 0.975),
    "tile": (0.998, 0.917, 0.987, 0.930, 0.987, 0.914),
    "toothbrush": (0.983, 0.973, 0.989, 0.986, 1.000, 0.988),
    "transistor": (0.980, 0.954, 0.999, 0.965, 0.998, 0.970),
    "wood": (0.995, 0.940, 0.986, 0.922, 0.997, 0.937),
    "zipper": (0.998, 0.980, 0.983, 0.985, 0.982, 0.971),
    "mean": (0.960, 0.959, 0.981, 0.972, 0.980, 0.970),
},  # Table II
    ("visa", 0.001): {
    "candle": (0.889, 0.875, 0.970, 0.977, 0.926, 0.957),
    "capsules": (0.755, 0.955, 0.706, 0.930, 0.741, 0.944),
    "cashew": (0.883, 0.951, 0.917, 0.984, 0.887, 0.970),
    "chewinggum": (0.988, 0.983, 0.975, 0.989, 0.972, 0.989),
    "fryum": (0.943, 0.870, 0.889, 0.908, 0.923, 0.915),
    "macaroni1": (0.774, 0.910, 0.797, 0.923, 0.852, 0.951),
    "macaroni2": (0.696, 0.837, 0.748, 0.789, 0.686, 0.866),
    "pcb1": (0.947, 0.996, 0.856, 0.990, 0.941, 0.996),
    "pcb2": (0.885, 0.968, 0.891, 0.972, 0.874, 0.952),
    "pcb3": (0.827, 0.980, 0.860, 0.985, 0.890, 0.977),
    "pcb4": (0.975, 0.970, 0.982, 0.975, 0.981, 0.976),
    "pipe_fryum": (0.763, 0.961, 0.988, 0.986, 0.898, 0.974),
    "mean": (0.860, 0.938, 0.882, 0.951, 0.881, 0.956),
},  # Table III
    ("visa", 0.01): {
    "candle": (0.909, 0.946, 0.984, 0.986, 0.956, 0.983),
    "capsules": (0.704, 0.974, 0.718, 0.965, 0.732, 0.974),
    "cashew": (0.919, 0.971, 0.935, 0.989, 0.904, 0.985),
    "chewinggum": (0.990, 0.988, 0.983, 0.990, 0.994, 0.990),
    "fryum": (0.932, 0.929, 0.923, 0.949, 0.941, 0.938),
    "macaroni1": (0.831, 0.944, 0.890, 0.983, 0.874, 0.983),
    "macaroni2": (0.712, 0.953, 0.756, 0.952, 0.722, 0.964),
    "pcb1": (0.959, 0.998, 0.939, 0.998, 0.956, 0.998),
    "pcb2": (0.944, 0.978, 0.930, 0.979, 0.924, 0.976),
    "pcb3": (0.929, 0.987, 0.932, 0.988, 0.927, 0.987),
    "pcb4": (0.986, 0.984, 0.991, 0.982, 0.996, 0.985),
    "pipe_fryum": (0.851, 0.977, 0.996, 0.989, 0.926, 0.984),
    "mean": (0.889, 0.969, 0.915, 0.979, 0.904, 0.979),
},  # Table IV
}

# Ablations on MVTec AD, CutSwap + PC, mean (image AUROC, pixel AUROC).
ABLATION_K = {1: (0.936, 0.952), 2: (0.937, 0.950), 3: (0.938, 0.945), 4: (0.955, 0.947),
              5: (0.940, 0.939), 6: (0.927, 0.934)}  # Table V
ABLATION_CLUSTER = {"random": (0.931, 0.947), "min": (0.937, 0.940), "max": (0.955, 0.947)}  # Table VI
ABLATION_LAYERS = {  # Table VII: VGG16 feature indices -> positions 0..4 of the five levels
    (4,): (0.940, 0.946), (16,): (0.939, 0.950), (30,): (0.936, 0.946), (4, 16): (0.939, 0.951),
    (16, 30): (0.949, 0.950), (4, 16, 30): (0.939, 0.950), (4, 9, 16, 23, 30): (0.955, 0.947)}
ABLATION_METHOD = {  # Table VIII: {coreset: {strategy: (image, pixel)}}
    0.001: {"sort": (0.947, 0.940), "kmeans": (0.955, 0.947)},
    0.01: {"sort": (0.973, 0.966), "kmeans": (0.980, 0.970)}}
VGG16_LEVEL_INDEX = {4: 0, 9: 1, 16: 2, 23: 3, 30: 4}  # paper's layer index -> saliency level


def paper_row(dataset: str, coreset: float, category: str, method: str):
    """(image AUROC, pixel AUROC) the paper reports, or None where it has none."""
    table = TABLES.get((dataset, coreset))
    if table is None or category not in table or method not in METHOD_COLUMNS:
        return None
    i = 2 * METHOD_COLUMNS.index(method)
    return table[category][i], table[category][i + 1]
