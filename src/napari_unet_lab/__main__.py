"""Command line entry point: ``napari-unet-lab`` or ``python -m napari_unet_lab``."""

import sys

from napari_unet_lab.cli.main import main as run_command_line


def main() -> None:
    """Run the command line (`napari_unet_lab.cli.main`) with the arguments in ``sys.argv``.

    ``napari-unet-lab --help`` lists the subcommands; ``napari-unet-lab demo`` runs the demo.
    """
    sys.exit(run_command_line())


if __name__ == "__main__":
    main()
