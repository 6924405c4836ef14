"""Datasets and SR wrappers: the registry and every registered class (imported explicitly)."""
from datasets.datasets import datasets, make, register  # noqa: F401
from datasets import image_folder, wrappers  # noqa: F401  (register their classes)
from datasets.sampling import seed_worker  # noqa: F401
