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


def check_all(items, check, summary, shown=20):
    """``[check(item) for item in items]``, except that every item is checked: the
    ``UserError`` of each failing one is collected and one ``UserError`` names them all
    (the first ``shown``), so a dataset with several bad images is fixed in one go.
    ``summary(n_failed)`` begins that message; a single failure keeps its own message."""
    results, problems = [], []
    for item in items:
        try:
            results.append(check(item))
        except UserError as e:
            problems.append(str(e))
    if len(problems) == 1:
        raise UserError(problems[0])
    if problems:
        more = f'; ... ({len(problems) - shown} more)' if len(problems) > shown else ''
        raise UserError(f'{summary(len(problems))}: {"; ".join(problems[:shown])}{more}')
    return results
