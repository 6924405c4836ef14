"""The dataset registry: names in YAML specs map to dataset and wrapper classes.

Same API as the original LIIF code::

    dataset = datasets.make(spec['dataset'])
    dataset = datasets.make(spec['wrapper'], args={'dataset': dataset})

A config's dataset section (``train_dataset``, ``val_dataset``, ``test_dataset``) is
``{dataset: spec, wrapper: spec, batch_size: n}``; ``make_sr_dataset`` builds it.
"""
from pathlib import Path

from utils.config import check_keys, positive_int
from utils.errors import UserError
from utils.registry import Registry

_registry = Registry('dataset')
datasets = _registry.entries  # name -> class, as in the original code

# Keys of a config's dataset section.
SECTION_KEYS = {'dataset', 'wrapper', 'batch_size'}
# Dataset args that name files or folders (what ``data_paths`` lists).
PATH_ARGS = ('root_path', 'root_path_1', 'root_path_2', 'split_file')


def register(name):
    """Decorator registering a dataset/wrapper class under ``name``."""
    return _registry.register(name)


def make(dataset_spec, args=None):
    """Build a dataset from ``{'name', 'args'}``; ``args`` extends/overrides its args."""
    return _registry.build(dataset_spec, args)


def check_section(section, where, batch_size_required=True):
    """Fail with one line naming ``where`` unless ``section`` is a dataset section:
    a mapping of ``SECTION_KEYS`` with ``dataset`` and ``wrapper`` specs and a positive
    ``batch_size`` (optional with ``batch_size_required=False``, default 1)."""
    if not hasattr(section, 'get'):
        raise UserError(f'{where} must be a mapping of {", ".join(sorted(SECTION_KEYS))}')
    check_keys(section, SECTION_KEYS, where)
    required = sorted(SECTION_KEYS) if batch_size_required else ['dataset', 'wrapper']
    for key in required:
        if key not in section:
            raise UserError(f'{where} needs {key!r}')
    positive_int(section.get('batch_size', 1), f'{where}.batch_size')


def make_sr_dataset(section, seed=None):
    """The SR dataset of a config section, as the original builds it:
    ``make(wrapper, {dataset: make(dataset)})``; the wrapper's randomness is seeded with
    ``seed`` when given (wrappers without ``set_seed`` have none to seed, and those with
    ``seeded_by_run = False`` keep their own: a fixed benchmark)."""
    dataset = make(section['wrapper'], args={'dataset': make(section['dataset'])})
    if seed is not None and hasattr(dataset, 'set_seed') and getattr(dataset, 'seeded_by_run', True):
        dataset.set_seed(seed)
    return dataset


def data_paths(section):
    """Files and folders that a dataset section's ``dataset`` reads (``PATH_ARGS``)."""
    args = section['dataset'].get('args') or {}
    return [Path(args[k]) for k in PATH_ARGS if args.get(k) is not None]
