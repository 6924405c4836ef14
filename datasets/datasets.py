"""The dataset registry: names in YAML specs map to dataset and wrapper classes.

Same API as the original LIIF code::

    dataset = datasets.make(spec['dataset'])
    dataset = datasets.make(spec['wrapper'], args={'dataset': dataset})
"""
from utils.registry import Registry

_registry = Registry('dataset')
datasets = _registry.entries  # name -> class, as in the original code


def register(name):
    """Decorator registering a dataset/wrapper class under ``name``."""
    return _registry.register(name)


def make(dataset_spec, args=None):
    """Build a dataset from ``{'name', 'args'}``; ``args`` extends/overrides its args."""
    return _registry.build(dataset_spec, args)
