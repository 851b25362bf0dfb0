"""Data sets (``fs.datasets``): synthetic Gaussian clusters and the bundled 8x8 handwritten digits (no download)."""

from ._data import digits as digits, gaussian_clusters as gaussian_clusters

__all__ = ["gaussian_clusters", "digits"]
