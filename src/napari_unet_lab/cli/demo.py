"""``napari-unet-lab demo``: open napari on the sample nuclei and segment them."""

from __future__ import annotations

import argparse
import sys

from .common import EXIT_FAILURE, PROG


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``demo`` subcommand to `subparsers` (for the help) and return its parser.

    The demo parses its own options (`napari_unet_lab.gui.demo`), so `main`
    hands it the arguments after ``demo`` as they are, in ``demo_options``.
    """
    parser = subparsers.add_parser(
        "demo",
        add_help=False,
        help="open napari on the sample nuclei and segment them (try: demo --help)",
    )
    parser.set_defaults(run=run, demo_options=[])
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the napari demo with the options in ``args.demo_options``."""
    try:
        from ..gui.demo import main as run_demo
    except ModuleNotFoundError as error:
        if error.name != "napari_unet_lab.gui.demo":
            raise
        print(f"{PROG} demo: error: the demo is not part of this install", file=sys.stderr)
        return EXIT_FAILURE
    return run_demo(list(args.demo_options))
