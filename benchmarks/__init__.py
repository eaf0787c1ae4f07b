"""Speed and quality measurements of napari-unet-lab, with their recorded results."""
