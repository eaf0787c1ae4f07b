"""Saving labels the way a user does it in napari: File ▸ Save Selected Layers…, then reopening.

The save dialog is napari's own (`QtViewer._save_layers_dialog`); only the file chooser
is answered here, as the user would answer it.
"""

from __future__ import annotations

import numpy as np
import pytest
from napari._qt import qt_viewer as qt_viewer_module
from napari.layers import Labels
from napari.plugins import _npe2

TIFF_FILTER = "U-Net Lab labels TIFF, keeps pixel size (*.tif *.tiff)"
ZARR_FILTER = "U-Net Lab labels OME-Zarr, keeps pixel size (*.zarr)"


@pytest.fixture
def labels_layer(make_napari_viewer):
    viewer = make_napari_viewer()
    labels = np.zeros((40, 50), np.uint16)
    labels[5:15, 5:20] = 1
    labels[20:35, 25:45] = 7
    layer = viewer.add_labels(labels, name="nuclei", scale=(0.65, 0.5), units=("um", "um"))
    viewer.layers.selection = {layer}
    return viewer, layer


def save_with_dialog(viewer, monkeypatch, path, chosen_filter) -> None:
    """Run napari's save dialog, answering the file chooser with `path` and `chosen_filter`."""
    answer = staticmethod(lambda *args, **kwargs: (str(path), chosen_filter))
    monkeypatch.setattr(qt_viewer_module.QFileDialog, "getSaveFileName", answer)
    viewer.window._qt_viewer._save_layers_dialog(selected=True)


def test_save_dialog_offers_the_plugin_tiff_writer_by_a_plain_name(labels_layer) -> None:
    _, layer = labels_layer

    filters, _ = _npe2.file_extensions_string_for_layers([layer])

    assert TIFF_FILTER in filters.split(";;")
    assert ZARR_FILTER in filters.split(";;")


def test_tiff_saved_from_napari_reopens_with_its_pixel_size(
    labels_layer, monkeypatch, tmp_path
) -> None:
    viewer, layer = labels_layer
    path = tmp_path / "saved nuclei.tif"

    save_with_dialog(viewer, monkeypatch, path, TIFF_FILTER)
    (reopened,) = viewer.open(str(path), plugin="napari-unet-lab")

    assert isinstance(reopened, Labels)
    assert reopened.name == "saved nuclei"
    assert reopened.data.dtype == np.uint16
    np.testing.assert_array_equal(reopened.data, layer.data)
    assert tuple(reopened.scale) == (0.65, 0.5)
    assert [str(unit) for unit in reopened.units] == ["micrometer", "micrometer"]


def test_existing_zarr_store_gets_a_plain_message_and_stays(
    labels_layer, monkeypatch, tmp_path
) -> None:
    """napari does not ask before replacing a folder: the writer refuses, in plain words."""
    viewer, layer = labels_layer
    path = tmp_path / "nuclei.zarr"
    save_with_dialog(viewer, monkeypatch, path, ZARR_FILTER)
    layer.data = np.zeros_like(layer.data)

    with pytest.raises(FileExistsError) as refused:
        save_with_dialog(viewer, monkeypatch, path, ZARR_FILTER)

    assert str(refused.value) == (
        "nuclei.zarr already exists and was left as it is: save again with another name, "
        "or delete the old one first."
    )
    (kept,) = viewer.open(str(path), plugin="napari-unet-lab")
    assert int(np.asarray(kept.data).max()) == 7


def menu_action(menu, text):
    """Return the action called `text` in `menu` or its submenus, or None."""
    for action in menu.actions():
        if action.text() == text:
            return action
        if action.menu() is not None and (found := menu_action(action.menu(), text)):
            return found
    return None


def test_file_menu_saves_labels_with_the_plugin_writer_and_pixel_size(
    labels_layer, monkeypatch, tmp_path
) -> None:
    from napari_unet_lab.gui import save_labels

    viewer, layer = labels_layer
    path = tmp_path / "from the menu.tif"
    answer = staticmethod(lambda *args, **kwargs: (str(path), save_labels.TIFF_FILTER))
    monkeypatch.setattr(save_labels.QFileDialog, "getSaveFileName", answer)
    action = menu_action(
        viewer.window.file_menu, "Save labels as TIFF (keeps pixel size)… (U-Net Lab)"
    )

    assert action is not None, "the File menu offers the plugin's TIFF writer"
    action.trigger()
    (reopened,) = viewer.open(str(path), plugin="napari-unet-lab")

    assert reopened.data.dtype == np.uint16
    np.testing.assert_array_equal(reopened.data, layer.data)
    assert tuple(reopened.scale) == (0.65, 0.5)


def test_file_menu_save_without_a_labels_layer_says_what_to_do(
    make_napari_viewer, monkeypatch, tmp_path
) -> None:
    from napari_unet_lab.gui import save_labels

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((10, 10)))
    shown = []
    monkeypatch.setattr(save_labels, "show_info", shown.append)

    assert save_labels.save_labels_as_tiff(viewer) == []
    assert shown == ["Select one Labels layer in the layer list to save it as a TIFF."]
    assert list(tmp_path.iterdir()) == []
