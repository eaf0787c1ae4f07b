"""Take the README's screenshots from the real napari window: the loop a biologist lives.

    xvfb-run -a .venv/bin/python scripts/screenshots.py

Drives the plugin only through what a user reaches: File ▸ Open Sample, the docked
widgets' controls, the Labels brush (napari's painting path, so the edits are undoable
and the Train widget sees them), File ▸ Save Selected Layers with the plugin's TIFF
writer. It segments the sample with the built-in model, corrects a few merged objects,
fine-tunes the built-in model on the corrected layer, saves the model, segments again
with the saved model file beside the first result, and saves the corrected objects.

Writes docs/images/first-ten-minutes-*.png and refreshes predict-widget.png,
train-widget.png and look-inside-widget.png. The model and labels go to a temporary
folder. About a minute and a half on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PLUGIN = "napari-unet-lab"
SAMPLE = "nuclei"  # sample key in napari.yaml: "Nuclei (BBBC039, fluorescence)"
WINDOW = (1600, 1000)
MAX_BYTES = 400_000  # each image in the README stays under this
PREVIEW = 512  # the Train widget previews at most this many pixels across
STEPS = 24  # fine-tuning steps: enough to see the loss fall, short enough for the docs


def main(argv: list[str] | None = None) -> int:
    """Run the loop and save its screenshots; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("docs/images"))
    parser.add_argument("--steps", type=int, default=STEPS)
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()

    import napari
    from napari.layers import Image, Labels

    from napari_unet_lab.core import builtin_models

    viewer = napari.Viewer(title="napari-unet-lab")
    viewer.window.resize(*WINDOW)
    shots = Screenshots(viewer, args.output)

    # 1. File ▸ Open Sample ▸ U-Net Lab ▸ Nuclei, and Plugins ▸ U-Net Lab ▸ each widget
    viewer.open_sample(PLUGIN, SAMPLE)
    inspect_dock, inspect = viewer.window.add_plugin_dock_widget(PLUGIN, "U-Net: Look inside")
    train_dock, trainer = viewer.window.add_plugin_dock_widget(PLUGIN, "U-Net: Train", tabify=True)
    predict_dock, predict = viewer.window.add_plugin_dock_widget(
        PLUGIN, "U-Net: Predict", tabify=True
    )
    image = next(layer for layer in viewer.layers if isinstance(layer, Image))
    truth = next(layer for layer in viewer.layers if isinstance(layer, Labels))
    truth.visible = False  # your own images come without one; it only checks the result here
    viewer.layers.selection.active = image
    predict_dock.raise_()
    predict.image.value = image

    # 2. Segment with the built-in model
    predict.run_button.native.click()
    wait_for(predict, "segmenting")
    builtin = predict.model.info.name
    objects = viewer.layers[f"{image.name} objects ({builtin})"]
    before = objects.data.copy()
    viewer.layers.selection.active = objects
    viewer.reset_view()
    shots.take("first-ten-minutes-1-segment", also="predict-widget")

    # 3. Correct a few objects: erase each merged object, paint its nuclei with new labels
    merged = merged_objects(objects.data, truth.data)
    if not merged:
        print("screenshots: the built-in model merged no nuclei here; nothing to correct")
        return 1
    region = around(objects.data == merged[0])
    look_at(viewer, region)
    objects.mode = "erase"
    shots.take("first-ten-minutes-2-merged")
    correct(objects, truth.data, merged)
    objects.mode = "paint"
    objects.selected_label = int(objects.data.max())
    shots.take("first-ten-minutes-3-corrected")

    # 4. Fine-tune the built-in model on the corrected layer, then save it
    model_file = Path(tempfile.mkdtemp(prefix="my-models-")) / "my-nuclei.json"
    objects.mode = "pan_zoom"
    train_dock.raise_()
    trainer.pairs.image.value = image
    trainer.pairs.annotations.value = objects
    trainer.pairs.kind.value = "objects"
    trainer.start_from.choice.value = builtin_models()[SAMPLE]  # "nuclei (built-in)"
    trainer.settings.steps.value = args.steps
    trainer.settings.preview_every.value = max(args.steps // 6, 1)
    objects.visible = False  # the live preview shows on the image
    viewer.layers.selection.active = image  # the preview follows the selected training image
    height, width = image.data.shape
    middle = max((width - PREVIEW) // 2, 0)
    look_at(viewer, (slice(0, height), slice(middle, middle + PREVIEW)))  # all of it previewed
    trainer.controls.start_button.native.click()
    wait_for(trainer, "training", timeout=150)
    trainer.saving.path.value = model_file
    trainer.saving.button.native.click()
    print(trainer.controls.status.value)
    if not model_file.is_file():
        print("screenshots: the model was not saved")
        return 1
    scroll_to_end(train_dock)  # the dock is taller than the window: show Save model and the plot
    shots.take("first-ten-minutes-4-fine-tune", also="train-widget")

    # 5. Segment again with the saved model: its layers sit beside the built-in model's
    predict_dock.raise_()
    predict.model.choose_file(model_file)
    predict.run_button.native.click()
    wait_for(predict, "segmenting")
    tuned = viewer.layers[f"{image.name} objects ({predict.model.info.name})"]
    for layer in viewer.layers:
        layer.visible = layer in (image, tuned)
    viewer.layers.selection.active = tuned
    look_at(viewer, region)
    shots.take("first-ten-minutes-5-compare")
    for name, labels in (
        (builtin, before),
        ("corrected", objects.data),
        ("fine-tuned", tuned.data),
    ):
        print(f"{name:>10}: {int(labels.max())} objects, {agreement(labels, truth.data)}")

    # 6. File ▸ Save Selected Layers… with "U-Net Lab labels TIFF, keeps pixel size"
    viewer.layers.selection.active = objects
    saved = model_file.parent / f"{image.name}_objects.tif"
    viewer.layers.save(str(saved), selected=True, plugin=PLUGIN)
    print(f"labels: {saved} ({saved.stat().st_size} bytes); model: {model_file}")

    # The Look inside widget, for its section of the README
    inspect_dock.raise_()
    inspect.image.value = image
    inspect.n_positions.value = 50
    inspect.average_button.native.click()
    wait_for(inspect, "averaging the receptive field")
    shown = [layer for layer in viewer.layers if "receptive field" in layer.name]
    for layer in viewer.layers:
        layer.visible = layer is image or layer in shown
    viewer.layers.selection.active = shown[0]
    lows = np.min([layer.extent.world[0][-2:] for layer in shown], axis=0)
    highs = np.max([layer.extent.world[1][-2:] for layer in shown], axis=0)
    look_at(viewer, (slice(lows[0], highs[0]), slice(lows[1], highs[1])), fill=0.55)
    shots.take("look-inside-widget")

    viewer.close()
    print(f"screenshots in {args.output}/ ({time.monotonic() - began:.0f} s)")
    return 0


def merged_objects(found: np.ndarray, truth: np.ndarray, most: int = 4) -> list[int]:
    """Return up to `most` found objects that each cover two or more true nuclei.

    This stands in for the biologist's eye: the sample's ground truth says
    which objects the built-in model merged.
    """
    merged = []
    for label in np.unique(found[found > 0]):
        inside = truth[found == label]
        ids, counts = np.unique(inside[inside > 0], return_counts=True)
        sizes = np.array([(truth == i).sum() for i in ids])
        if (counts > 0.5 * sizes).sum() >= 2:  # at least two nuclei mostly inside it
            merged.append((int(inside.size), int(label)))
    return [label for _, label in sorted(merged, reverse=True)[:most]]


def correct(objects, truth: np.ndarray, merged: list[int]) -> None:
    """Erase each merged object and paint its nuclei with new labels.

    Goes through `Labels.data_setitem`, the path of napari's brush and eraser,
    so the edits are in the layer's undo history and the Train widget sees them.
    """
    for label in merged:
        where = objects.data == label
        nuclei = [n for n in np.unique(truth[where]) if n and (truth[where] == n).mean() > 0.1]
        objects.data_setitem(np.nonzero(where), 0)  # the eraser
        for nucleus in nuclei:  # the brush, one new label per nucleus
            new = int(objects.data.max()) + 1
            objects.data_setitem(np.nonzero((truth == nucleus) & (objects.data == 0)), new)
        print(f"corrected object {label}: split into {len(nuclei)} nuclei")


def around(mask: np.ndarray, height: int = 160, width: int = 240) -> tuple[slice, slice]:
    """Return a height × width region of the image centred on `mask`, inside the image."""
    rows, cols = np.nonzero(mask)
    top = int(np.clip(rows.mean() - height / 2, 0, mask.shape[0] - height))
    left = int(np.clip(cols.mean() - width / 2, 0, mask.shape[1] - width))
    return slice(top, top + height), slice(left, left + width)


def look_at(viewer, region: tuple[slice, slice], fill: float = 1.0) -> None:
    """Centre the camera on `region` (rows, columns) and zoom so it fills `fill` of the canvas."""
    rows, cols = region
    camera = viewer.scene.camera
    camera.center = ((rows.start + rows.stop) / 2, (cols.start + cols.stop) / 2)
    height, width = viewer.window._qt_viewer.canvas.size
    camera.zoom = fill * min(height / (rows.stop - rows.start), width / (cols.stop - cols.start))


def agreement(found: np.ndarray, truth: np.ndarray) -> str:
    """Foreground IoU and how many true nuclei one object matches at IoU 0.5."""
    iou = ((found > 0) & (truth > 0)).sum() / max(((found > 0) | (truth > 0)).sum(), 1)
    matched = 0
    for nucleus in np.unique(truth[truth > 0]):
        where = truth == nucleus
        labels, counts = np.unique(found[where], return_counts=True)
        best = labels[np.argmax(counts)]
        if best and (where & (found == best)).sum() / (where | (found == best)).sum() > 0.5:
            matched += 1
    return f"foreground IoU {iou:.3f}, {matched}/{len(np.unique(truth)) - 1} nuclei matched"


def scroll_to_end(dock) -> None:
    """Scroll a dock to its last rows, as a user does to reach them."""
    from qtpy.QtWidgets import QScrollArea

    for area in dock.findChildren(QScrollArea):
        bar = area.verticalScrollBar()
        bar.setValue(bar.maximum())


def wait_for(widget, doing: str, timeout: float = 120) -> None:
    """Keep Qt's events flowing until the widget's background task ends."""
    from qtpy.QtWidgets import QApplication

    deadline = time.monotonic() + timeout
    while widget.running:
        if time.monotonic() > deadline:
            raise TimeoutError(f"still {doing} after {timeout:.0f} s")
        QApplication.processEvents()
        time.sleep(0.02)
    settle()


def settle(seconds: float = 0.3) -> None:
    """Let napari draw what changed."""
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.01)


class Screenshots:
    """Save screenshots of the whole window, each small enough for the README."""

    def __init__(self, viewer, folder: Path):
        self._viewer, self._folder = viewer, folder

    def take(self, name: str, also: str | None = None) -> None:
        """Save the window as `name`.png (and `also`.png), without pop-up notifications."""
        from PIL import Image

        self._close_notifications()
        settle()
        pixels = self._viewer.screenshot(canvas_only=False, flash=False)
        picture = Image.fromarray(pixels).convert("RGB")
        for stem in filter(None, (name, also)):
            path = self._folder / f"{stem}.png"
            save_small(picture, path)
            print(f"{path} {Image.open(path).size} {path.stat().st_size // 1000} KB")

    def _close_notifications(self) -> None:
        try:  # the toasts would cover the image
            from napari._qt.dialogs.qt_notification import NapariQtNotification
        except ImportError:
            return
        for toast in self._viewer.window._qt_window.findChildren(NapariQtNotification):
            toast.close()


def save_small(picture, path: Path) -> None:
    """Save a PNG under MAX_BYTES: 256 colours first (crisp text), then smaller if need be."""
    from PIL import Image

    picture.save(path, optimize=True)
    scale = 1.0
    while path.stat().st_size > MAX_BYTES:
        size = (round(picture.width * scale), round(picture.height * scale))
        smaller = picture.resize(size, Image.LANCZOS) if scale < 1 else picture
        smaller.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            path, optimize=True
        )
        scale *= 0.9


if __name__ == "__main__":
    sys.exit(main())
