"""Argument and index checks shared by the datasets and wrappers."""
from utils.errors import UserError


def check_int(value, name, minimum, where, allow_none=False, maximum=None):
    """``value`` if it is an int in ``[minimum, maximum]`` (or ``None`` if allowed); else
    a ``UserError`` ``'<where>: <name> must be an integer >= <minimum>, got <value>'``."""
    if value is None and allow_none:
        return None
    if (isinstance(value, bool) or not isinstance(value, int) or value < minimum
            or (maximum is not None and value > maximum)):
        limit = f'in [{minimum}, {maximum}]' if maximum is not None else f'>= {minimum}'
        raise UserError(f'{where}: {name} must be an integer {limit}, got {value!r}')
    return value


def check_number(value, name, where, greater_than):
    """``value`` as a float if it is a number ``> greater_than``; else a ``UserError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > greater_than:
        raise UserError(f'{where}: {name} must be a number > {greater_than}, got {value!r}')
    return float(value)


def item_index(idx, length):
    """Normalise a sequence index (negative counts from the end); IndexError outside."""
    if not -length <= idx < length:
        raise IndexError(f'index {idx} out of range for a dataset of {length} items')
    return idx % length
