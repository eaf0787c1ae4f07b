"""The ``napari-unet-lab`` command: segment, evaluate, train and export models from a shell.

Every subcommand uses the same core functions and model files as the napari
widgets, so a model trained here opens in napari and the other way round.
Nothing here imports napari or Qt, except the ``demo`` subcommand when it runs.
Each subcommand lives in its own module (``predict``, ``evaluate``, ``train``,
``export``, ``demo``) with ``add_parser(subparsers)`` and ``run(args) -> int``;
this one assembles them and turns every error into a message and an exit code
(listed in `napari_unet_lab.cli.common`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from ..core.device import NotEnoughMemory, is_out_of_memory
from ..core.model.builtin import builtin_models
from ..core.model.export import ExportError, MissingPackageError
from ..core.model.files import ModelFileError
from . import demo, evaluate, export, predict, train
from .common import (
    EXIT_BAD_INPUT,
    EXIT_BAD_MODEL,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_OUTPUT_EXISTS,
    EXIT_USAGE,
    PROG,
    InputError,
    UsageError,
    out_of_memory_message,
)

SUBCOMMANDS = (predict, evaluate, train, export, demo)  # in the order --help lists them


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; default ``sys.argv[1:]``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:  # the demo parses its own options
        return demo.run(argparse.Namespace(demo_options=argv[1:]))
    parser = build_parser()
    if not argv:
        parser.print_help()
        return EXIT_OK
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version or a usage error, already printed
        return int(exit_.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return run_subcommand(args)


def run_subcommand(args: argparse.Namespace) -> int:
    """Run the subcommand `args` were parsed for; turn what goes wrong into an exit code."""
    name = f"{PROG} {args.command}"
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return fail(name, "interrupted; nothing more was written", EXIT_INTERRUPTED)
    except UsageError as error:
        return fail(name, str(error), EXIT_USAGE)
    except ModelFileError as error:
        return fail(name, str(error), EXIT_BAD_MODEL)  # its message names the file at fault
    except InputError as error:
        return fail(name, str(error), EXIT_BAD_INPUT)
    except FileExistsError as error:
        message = str(error).replace("pass overwrite=True", "add --overwrite")
        return fail(name, message, EXIT_OUTPUT_EXISTS)
    except (MissingPackageError, ExportError, NotEnoughMemory) as error:
        return fail(name, str(error), EXIT_FAILURE)  # NotEnoughMemory says what fits
    except (MemoryError, RuntimeError) as error:  # from torch or NumPy, often without text
        if not is_out_of_memory(error):
            raise  # a bug: its traceback helps more than a message
        return fail(name, out_of_memory_message(args.command), EXIT_FAILURE)
    except OSError as error:
        if is_out_of_memory(error):
            return fail(name, out_of_memory_message(args.command), EXIT_FAILURE)
        where = f": {error.filename}" if error.filename else ""
        return fail(name, f"{error.strerror or error}{where}", EXIT_FAILURE)


def fail(name: str, message: str, status: int) -> int:
    """Print ``<name>: error: <message>`` on stderr and return `status`."""
    print(f"{name}: error: {message}", file=sys.stderr)
    return status


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``napari-unet-lab`` command and its subcommands."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Segment microscopy images with a U-Net: predict, evaluate, train, export.",
        epilog=(
            "exit codes: 0 success, 1 failure, 2 wrong usage, 3 unusable input data, "
            "4 unusable model file, 5 output exists (add --overwrite), 130 interrupted. "
            "MODEL is a model file (.json or .safetensors) or the name of a built-in model "
            f"({', '.join(builtin_models()) or 'none installed'})."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for subcommand in SUBCOMMANDS:
        subcommand.add_parser(subparsers)
    return parser
