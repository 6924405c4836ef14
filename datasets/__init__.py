"""Datasets and SR wrappers: the registry and every registered class (imported explicitly)."""
from datasets.datasets import datasets, make, register  # noqa: F401
