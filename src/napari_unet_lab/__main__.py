"""Command line entry point: ``napari-unet-lab`` or ``python -m napari_unet_lab``."""

import sys


def main() -> None:
    """Run the napari-unet-lab demo with the command-line arguments in ``sys.argv``.

    The demo parses its own arguments, so ``napari-unet-lab --help`` lists them.
    """
    # Imported here so that `--help` of a broken install still says what went wrong.
    try:
        from napari_unet_lab.demo import main as run_demo
    except ModuleNotFoundError as error:
        if error.name != "napari_unet_lab.demo":
            raise
        sys.exit("napari-unet-lab: the demo is not part of this install.")
    sys.exit(run_demo())


if __name__ == "__main__":
    main()
