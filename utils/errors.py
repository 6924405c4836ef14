"""User-facing errors: one clear line and a non-zero exit, no traceback.

Raise ``UserError`` for anything a user can fix (a bad path, config value, file).
Scripts wrap their ``main`` with ``run_cli`` which prints ``error: <message>`` to
stderr and exits with status 2. Programming errors keep their tracebacks.
"""
import sys
import warnings


class UserError(Exception):
    """A mistake in the user's input; the message names the file or value at fault."""


def _one_line_warning(message, category, filename, lineno, line=None):
    return f'warning: {message}\n'


def run_cli(main, *args, **kwargs):
    """Run ``main(*args, **kwargs)``; turn ``UserError`` into one line + exit code 2.

    Warnings meant for the user (``UserWarning``) print as one ``warning: ...`` line."""
    previous, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        return main(*args, **kwargs)
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        sys.exit(130)
    finally:
        warnings.formatwarning = previous
