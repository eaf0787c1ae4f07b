"""The GUI-free core: numpy and torch only, never napari or Qt."""
