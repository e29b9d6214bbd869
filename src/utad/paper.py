"""The paper's published numbers (``../shared/paper/utad-paper.txt``), for the benchmark tables' side-by-side.

Read from the paper's Tables 1-4. Table 1 gives per-category IoU for every method and only the mean AUROC;
Table 2 gives mean image AUROC over the ten classes; Table 3 IoU of single measurements on four objects;
Table 4 hazelnut. Where the text copy of the paper loses the layout (Table 2's ablation check marks), the row
names follow ``../shared/docs/utad-spec.md``.
"""

from __future__ import annotations

MVTEC_CATEGORIES = (
    "bottle",
    "cable",
    "capsule",
    "carpet",
    "grid",
    "hazelnut",
    "leather",
    "metal_nut",
    "pill",
    "screw",
    "tile",
    "toothbrush",
    "transistor",
    "wood",
    "zipper",
)


def _row(values: str) -> dict[str, float]:
    return dict(zip(MVTEC_CATEGORIES, map(float, values.split()), strict=True))


# Table 1: IoU at alpha = 0.5 per category, per method; then (mean IoU, mean image AUROC)
TABLE1_IOU = {
    "AnoGAN": _row("0.05 0.01 0.04 0.34 0.04 0.02 0.34 0.00 0.17 0.01 0.08 0.07 0.08 0.14 0.01"),
    "AVID": _row("0.28 0.27 0.21 0.25 0.51 0.54 0.32 0.05 0.11 0.22 0.09 0.43 0.22 0.14 0.25"),
    "AE-L2": _row("0.22 0.05 0.11 0.38 0.83 0.41 0.67 0.26 0.25 0.34 0.23 0.51 0.22 0.29 0.13"),
    "AE-SSIM": _row("0.15 0.01 0.09 0.69 0.88 0.00 0.34 0.01 0.07 0.03 0.04 0.08 0.01 0.36 0.10"),
    "LSA": _row("0.27 0.36 0.22 0.76 0.20 0.41 0.77 0.38 0.18 0.38 0.32 0.48 0.21 0.41 0.14"),
    "AD-VAE": _row("0.27 0.18 0.11 0.10 0.02 0.44 0.24 0.49 0.18 0.17 0.23 0.14 0.30 0.14 0.06"),
    "gamma-VAE": _row("0.27 0.26 0.24 0.79 0.36 0.63 0.41 0.22 0.48 0.38 0.38 0.37 0.44 0.45 0.17"),
    "UnSt": _row("0.28 0.11 0.24 0.50 0.19 0.36 0.44 0.31 0.23 0.17 0.22 0.21 0.15 0.16 0.08"),
    "CAVGA": _row("0.34 0.38 0.31 0.73 0.38 0.51 0.79 0.45 0.40 0.48 0.38 0.57 0.35 0.59 0.16"),
    "UTAD": _row("0.37 0.38 0.41 0.79 0.89 0.65 0.79 0.47 0.49 0.44 0.40 0.53 0.47 0.59 0.30"),
}
TABLE1_MEAN = {  # (mean IoU, mean image AUROC) over the 15 categories
    "AnoGAN": (0.09, 0.74),
    "AVID": (0.26, 0.78),
    "AE-L2": (0.33, 0.82),
    "AE-SSIM": (0.19, 0.87),
    "LSA": (0.37, 0.79),
    "AD-VAE": (0.20, 0.86),
    "gamma-VAE": (0.39, 0.86),
    "UnSt": (0.24, 0.87),
    "CAVGA": (0.47, 0.89),
    "UTAD": (0.53, 0.90),
}
# which paper column a utad method corresponds to
PAPER_NAME = {"utad": "UTAD", "ae-l2": "AE-L2", "ae-ssim": "AE-SSIM"}

# Table 2: mean image AUROC over the ten normal classes (UTAD, full model)
TABLE2_UTAD = {"mnist": 0.994, "fashion-mnist": 0.899, "cifar10": 0.884}
# Table 2's ablation rows (Baseline ... full), mean AUROC per dataset, in the spec's row order
TABLE2_ABLATION = {
    "mnist": (0.979, 0.981, 0.989, 0.988, 0.993, 0.992, 0.994),
    "fashion-mnist": (0.743, 0.751, 0.885, 0.890, 0.891, 0.894, 0.899),
    "cifar10": (0.787, 0.803, 0.861, 0.872, 0.876, 0.881, 0.884),
}

# Table 3: IoU of single measurements (PM = conv1_2 + conv2_2 + conv3_4 over all three terms)
TABLE3_PM_IOU = {"bottle": 0.37, "cable": 0.38, "capsule": 0.41, "hazelnut": 0.65}
TABLE3_PIXEL_X_XHAT_IOU = {"bottle": 0.23, "cable": 0.17, "capsule": 0.33, "hazelnut": 0.39}

# Table 4 (hazelnut): parameters (M), IoU, image AUROC
TABLE4 = {
    "AE-64": (2.98, 0.301, 0.896),
    "AE-128": (11.89, 0.188, 0.954),
    "AE-256": (47.47, 0.197, 0.945),
    "UnSt": (14.28, 0.363, 0.937),
    "UTAD": (16.77, 0.649, 0.976),
}
