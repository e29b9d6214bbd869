"""Data layer: listing samples (``samples``), reading files (``images``), datasets, one-class benchmarks, demo."""

from utad.data.datasets import ArrayDataset, SampleDataset
from utad.data.samples import Listing, Sample, list_folder, list_mvtec, split_validation

__all__ = [
    "ArrayDataset",
    "Listing",
    "Sample",
    "SampleDataset",
    "list_folder",
    "list_mvtec",
    "split_validation",
]
