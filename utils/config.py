"""Reading YAML configs: safe parsing, one-line errors, read-only result.

Configs are parsed with ``yaml.safe_load``; a syntax error names the file and line.
The result is frozen (``FrozenDict``/tuples) so nothing can change the config after
it is loaded; ``thaw`` gives plain dicts/lists back (for saving or dumping).
"""
from pathlib import Path

import yaml

from utils.errors import UserError


FLAG_VALUES = {'true': True, '1': True, 'yes': True, 'false': False, '0': False, 'no': False}


def flag_value(text):
    """An argparse ``type`` for boolean flags: ``--fast`` alone, or the references'
    ``--fast True`` / ``--cmsr False`` (true/false, 1/0, yes/no). The references take any
    non-empty string as true; here ``False`` means false."""
    import argparse
    value = FLAG_VALUES.get(str(text).lower())
    if value is None:
        raise argparse.ArgumentTypeError(f'expected true or false, got {text!r}')
    return value


class FrozenDict(dict):
    """A dict that refuses to change. Behaves like a dict for reading."""

    def _refuse(self, *args, **kwargs):
        raise TypeError('the config is read-only after loading; copy it with thaw() '
                        'or pass values explicitly')

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __deepcopy__(self, memo):
        return self  # immutable

    def __reduce__(self):
        return (FrozenDict, (dict(self),))


def freeze(obj):
    """Recursively turn dicts into ``FrozenDict`` and lists into tuples."""
    if isinstance(obj, dict):
        return FrozenDict({k: freeze(v) for k, v in obj.items()})
    if isinstance(obj, (list, tuple)):
        return tuple(freeze(v) for v in obj)
    return obj


def thaw(obj):
    """Recursively turn mappings into plain dicts and tuples into lists."""
    if isinstance(obj, dict):
        return {k: thaw(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [thaw(v) for v in obj]
    return obj


def load_yaml(path):
    """Parse a YAML mapping from ``path`` (``UserError`` naming file and line on failure)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f'config not found: {path}')
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f'{path}:{mark.line + 1}' if mark else str(path)
        raise UserError(f'{where}: invalid YAML: {e.problem or e.context}') from None
    except yaml.YAMLError as e:
        raise UserError(f'{path}: invalid YAML: {e}') from None
    except UnicodeDecodeError:
        raise UserError(f'{path}: not a YAML text file (undecodable bytes)') from None
    except OSError as e:
        raise UserError(f'cannot read config {path}: {e.strerror or e}') from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f'{path}: a config must be a YAML mapping of keys, '
                        f'got {type(data).__name__}')
    return data


def check_keys(mapping, valid, where):
    """Fail with the list of valid keys if ``mapping`` holds a key not in ``valid``."""
    unknown = [k for k in mapping if k not in valid]
    if unknown:
        raise UserError(f'{where}: unknown key(s) {", ".join(map(str, unknown))}; '
                        f'valid: {", ".join(sorted(valid))}')


def positive_int(value, what):
    """Raise ``UserError`` ``'<what> must be a positive integer, got <value>'`` unless
    ``value`` is an int >= 1 (``True`` is not)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f'{what} must be a positive integer, got {value!r}')


def load_config(path, valid_keys=None):
    """Load, check top-level keys against ``valid_keys`` (if given) and freeze."""
    data = load_yaml(path)
    if valid_keys is not None:
        check_keys(data, valid_keys, str(path))
    return freeze(data)


def data_norm_values(data_norm):
    """Check a ``data_norm`` config value and return its numbers.

    ``data_norm`` is ``{inp: {sub: [...], div: [...]}, gt: {sub: [...], div: [...]}}``
    (each entry one number or one per channel); ``None`` means no normalisation.
    Returns ``{'inp': {'sub': [floats], 'div': [floats]}, 'gt': {...}}``; raises
    ``UserError`` naming the value when it has another shape.
    """
    if data_norm is None:
        data_norm = {'inp': {'sub': [0], 'div': [1]}, 'gt': {'sub': [0], 'div': [1]}}
    try:
        return {part: {key: _numbers(data_norm[part][key]) for key in ('sub', 'div')}
                for part in ('inp', 'gt')}
    except (KeyError, TypeError, ValueError):
        raise UserError('data_norm must be {inp: {sub: [..], div: [..]}, '
                        f'gt: {{sub: [..], div: [..]}}}}, got {data_norm!r}') from None


def _numbers(value):
    """A number or a non-empty list of numbers -> list of floats (TypeError if not)."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values or any(isinstance(v, (bool, str)) for v in values):
        raise TypeError('not numbers')
    return [float(v) for v in values]
