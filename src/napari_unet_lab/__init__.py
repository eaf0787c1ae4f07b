"""Train, run and look inside U-Nets for microscopy segmentation, in napari."""

__version__ = "0.1.0"
