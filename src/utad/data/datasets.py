"""``torch.utils.data.Dataset`` classes over listed samples or in-memory arrays.

Every item is a dict: ``image`` float tensor (C, H, W) in [0, 1], ``mask`` bool tensor (1, H, W) (all False
for normal images and when no mask is known), ``label`` int (1 = anomaly) and ``path`` (a file path or an
``<name>:<index>`` name for in-memory data: the image's index in its source split when the dataset was given
one, else its position).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from utad.data.images import image_array, mask_array, open_image, resize, to_channels
from utad.data.samples import Sample
from utad.errors import DataError


class SampleDataset(Dataset):
    """Reads listed image files (and masks) at ``size`` x ``size`` with ``channels`` channels."""

    def __init__(self, samples: list[Sample], size: int, channels: int = 3) -> None:
        self.samples = samples
        self.size = size
        self.channels = channels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        s = self.samples[i]
        img = open_image(s.path)  # each file is decoded once
        image = image_array(img, self.size, self.channels)
        if s.mask is not None:
            mask_img = open_image(s.mask)
            if img.size != mask_img.size:
                raise DataError(
                    f"{s.mask}: mask size {mask_img.size[0]}x{mask_img.size[1]} differs from its image "
                    f"{s.path} ({img.size[0]}x{img.size[1]})"
                )
            mask = mask_array(mask_img, self.size)
        else:
            mask = np.zeros((self.size, self.size), dtype=bool)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "mask": torch.from_numpy(mask[None]),
            "label": int(s.label),
            "path": str(s.path),
        }


class ArrayDataset(Dataset):
    """In-memory uint8 images ``(N, H, W)`` or ``(N, H, W, 3)`` (one-class benchmarks), resized to ``size``.

    ``index``: each image's index in the split it was taken from (e.g. the MNIST test split), named in the
    item's ``path`` so a score can be traced back to its image; without it the path holds the position.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        size: int,
        channels: int = 3,
        name: str = "array",
        index: np.ndarray | None = None,
    ):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if index is not None and len(index) != len(images):
            raise ValueError(f"{len(images)} images but {len(index)} indices")
        self.index = index
        self.images = images
        self.labels = labels
        self.size = size
        self.channels = channels
        self.name = name

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        arr = resize(to_channels(self.images[i].astype(np.float32) / 255.0, self.channels), self.size)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))),
            "mask": torch.zeros(1, self.size, self.size, dtype=torch.bool),
            "label": int(self.labels[i]),
            "path": f"{self.name}:{i if self.index is None else int(self.index[i])}",
        }
