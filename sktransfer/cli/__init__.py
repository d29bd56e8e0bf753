"""The ``sktransfer`` command: compare, extract, finetune, predict, export, probe, backbones.

:func:`build_parser` declares the commands and their options (``parser.py``); each
command's work is a function of ``commands.py``. Imports of torch and the estimators
wait until a command runs, so that ``--help`` answers at once.
"""

import sys
import warnings

from sktransfer.cli.parser import build_parser

#: Errors that bad input raises: one line names the fix. Anything else is a bug and
#: keeps its traceback. (NotFittedError is a ValueError; WeightsUnavailableError a
#: FileNotFoundError.)
USAGE_ERRORS = (ValueError, TypeError, FileNotFoundError, MemoryError)

__all__ = ["build_parser", "main"]


def main(argv=None):
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    formatwarning = warnings.formatwarning
    if not args.debug:  # a warning is one line for the user, not a line of our source
        warnings.formatwarning = _one_line_warning(args.command)
    try:
        args.run(args)
    except USAGE_ERRORS as error:
        if args.debug:
            raise
        print(f"sktransfer {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sktransfer {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatwarning
    return 0


def _one_line_warning(command):
    def formatwarning(message, category, filename, lineno, line=None):
        return f"sktransfer {command}: warning: {message}\n"

    return formatwarning
