"""Data: the validated, immutable [`flowsim.Dataset`][flowsim.Dataset] and the generators behind ``fs.datasets``."""

from ._dataset import Dataset as Dataset
from ._generators import digits as digits, gaussian_clusters as gaussian_clusters
