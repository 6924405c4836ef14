"""User-facing errors: one clear line and a non-zero exit, no traceback.

Raise ``UserError`` for anything a user can fix (a bad path, config value, file).
Scripts wrap their ``main`` with ``run_cli``, which prints ``error: <message>`` to stderr
and exits with status 2 for:

- a ``UserError``, also one raised inside a DataLoader worker process (PyTorch re-raises
  it in the main process with the worker's traceback in its message; only the message
  is shown);
- an ``OSError`` of a failing environment (``ENVIRONMENT_ERRNOS``: full disk, read-only
  or forbidden folder, I/O error, too many open files), named by its file.

``KeyboardInterrupt`` ends with ``interrupted`` and status 130. Anything else is a bug of
ours and keeps its traceback. ``--debug`` on a script's command line (or the environment
variable ``LIIF_DEBUG=1``) shows the traceback of every error.
"""
import errno
import os
import sys
import warnings

# errno values that mean "the machine cannot do this", not "the code is wrong".
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                      errno.EIO, errno.EMFILE, errno.ENFILE, errno.EFBIG}
DEBUG_ENV = 'LIIF_DEBUG'


class UserError(Exception):
    """A mistake in the user's input or environment; the message names the file, key or
    value at fault."""


def add_debug_flag(parser):
    """Give an argparse parser the ``--debug`` flag that ``run_cli`` honours."""
    parser.add_argument('--debug', action='store_true',
                        help=f'show tracebacks of errors (also: {DEBUG_ENV}=1)')
    return parser


def debug_requested(argv=None):
    """True when tracebacks were asked for: ``--debug`` in ``argv`` (default: the command
    line) or ``LIIF_DEBUG`` set to anything but empty or ``0``."""
    argv = sys.argv[1:] if argv is None else argv
    return '--debug' in argv or os.environ.get(DEBUG_ENV, '') not in ('', '0')


def is_environment_error(error):
    """Whether an ``OSError`` comes from the machine (full disk, permissions, ...)."""
    return isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRNOS


def environment_message(error):
    """One line for an environment ``OSError``: ``<what failed>: <reason>``."""
    where = error.filename if error.filename is not None else 'a file'
    return f'cannot use {where}: {error.strerror or error}'


def worker_message(text):
    """The original message of an exception PyTorch re-raised from a DataLoader worker
    (``'Caught UserError in DataLoader worker process 0.\\nOriginal Traceback ...'``),
    or ``None`` when ``text`` is not such a message."""
    if not text.startswith('Caught ') or 'Original Traceback' not in text:
        return None
    last = [line for line in text.splitlines() if line.strip()][-1]
    kind, sep, message = last.partition(': ')
    return message if sep and not kind.startswith(' ') else last


def _one_line_warning(message, category, filename, lineno, line=None):
    return f'warning: {message}\n'


def run_cli(main, *args, **kwargs):
    """Run ``main(*args, **kwargs)`` as a command-line program (see the module docstring).

    Warnings meant for the user (``UserWarning``) print as one ``warning: ...`` line."""
    if debug_requested():
        return main(*args, **kwargs)
    previous, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        return main(*args, **kwargs)
    except UserError as e:
        message = worker_message(str(e)) or str(e)
        _fail(message)
    except OSError as e:
        message = worker_message(str(e))
        if message is not None and any(f'[Errno {n}]' in message for n in ENVIRONMENT_ERRNOS):
            _fail(message)
        if not is_environment_error(e):
            raise
        _fail(environment_message(e))
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        sys.exit(130)
    finally:
        warnings.formatwarning = previous


def _fail(message):
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)
