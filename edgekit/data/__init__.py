"""Calibration and evaluation data: sources (npz, npy folder, synthetic) and their checks."""

from edgekit.data.dataset import Dataset
from edgekit.data.sources import load_data, synthetic_data

__all__ = ["Dataset", "load_data", "synthetic_data"]
