"""File ▸ IO Utilities ▸ Save labels as TIFF, keeping the pixel size.

napari's *Save Selected Layers…* lists napari's own TIFF writer first, and a plugin
cannot change that order (npe2 sorts writers of one layer type by registration).
This menu entry goes straight to the plugin's writer: one dialog, a name, done.
"""

from __future__ import annotations

from pathlib import Path

from napari.layers import Labels
from napari.utils.notifications import show_info
from napari.viewer import Viewer
from qtpy.QtWidgets import QFileDialog

from ..writers import write_labels_tiff

TIFF_FILTER = "TIFF, keeps pixel size (*.tif *.tiff)"


def labels_to_save(viewer: Viewer) -> Labels | None:
    """Return the Labels layer the user means: the active one, or the only selected one."""
    active = viewer.layers.selection.active
    if isinstance(active, Labels):
        return active
    chosen = [layer for layer in viewer.layers.selection if isinstance(layer, Labels)]
    return chosen[0] if len(chosen) == 1 else None


def save_labels_as_tiff(viewer: Viewer) -> list[str]:
    """Ask where to save the selected Labels layer and write it with its pixel size.

    The file dialog asks before replacing an existing file, as napari's does.

    Returns
    -------
    list of str
        The path written; empty when nothing was saved.
    """
    layer = labels_to_save(viewer)
    if layer is None:
        show_info("Select one Labels layer in the layer list to save it as a TIFF.")
        return []
    path, _ = QFileDialog.getSaveFileName(
        None, f"Save {layer.name} as TIFF", f"{layer.name}.tif", TIFF_FILTER
    )
    if not path:
        return []  # the user cancelled
    data, meta, _ = layer.as_layer_data_tuple()
    written = write_labels_tiff(path, data, meta)
    show_info(f"Saved {layer.name} to {Path(written[0]).name} with its pixel size.")
    return written
