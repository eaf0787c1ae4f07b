"""The demo: napari with the plugin on its sample nuclei, segmented by the built-in model.

With a screen, napari opens and stays open. With ``--headless`` (what
``scripts/demo.sh`` uses when there is no screen) the same steps run on a
virtual screen, and a screenshot and the result labels are saved to a folder.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="napari-unet-lab",
        description="Open napari with the U-Net widgets on sample nuclei and segment them.",
    )
    parser.add_argument(
        "--headless",
        action="store_true",
        help="run without showing a window; save a screenshot and the labels instead",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("demo-output"),
        help="folder for the screenshot and labels in headless mode (default: demo-output)",
    )
    parser.add_argument("--sample", default="nuclei", help="sample to open (default: nuclei)")
    parser.add_argument(
        "--look-inside",
        action="store_true",
        help="headless: also average the effective receptive field and save a screenshot of it",
    )
    parser.add_argument(
        "--train",
        type=int,
        default=0,
        metavar="STEPS",
        help="headless: also fine-tune the built-in model on the sample's ground truth for "
        "STEPS steps and save a screenshot of the Train widget",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit status (0 on success)."""
    args = _parse(argv)
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        print("napari-unet-lab: no screen found; run `bash scripts/demo.sh`, which uses xvfb-run.")
        return 2
    import napari

    from ..core.formats.tiff import save_labels_tiff
    from ..core.model.builtin import builtin_models

    if not builtin_models():
        print("napari-unet-lab: no built-in model is installed; reinstall the plugin.")
        return 1
    viewer = napari.Viewer(title="napari-unet-lab demo")
    viewer.window.resize(1500, 950)
    viewer.open_sample("napari-unet-lab", args.sample)
    inspect = viewer.window.add_plugin_dock_widget("napari-unet-lab", "U-Net: Look inside")
    trainer = viewer.window.add_plugin_dock_widget("napari-unet-lab", "U-Net: Train", tabify=True)
    _, widget = viewer.window.add_plugin_dock_widget(
        "napari-unet-lab", "U-Net: Predict", tabify=True
    )
    image = next(layer for layer in viewer.layers if isinstance(layer, napari.layers.Image))
    truth = next(layer for layer in viewer.layers if isinstance(layer, napari.layers.Labels))
    trainer[1].pairs.image.value, trainer[1].pairs.annotations.value = image, truth
    widget.image.value = image
    widget.start()
    if not args.headless:
        napari.run()
        return 0

    _wait_for(widget)
    objects_name = f"{image.name} objects ({widget.model.info.name})"
    if objects_name not in viewer.layers:
        print(f"napari-unet-lab: segmentation did not finish: {widget.status.value}")
        return 1
    args.output.mkdir(parents=True, exist_ok=True)
    objects = viewer.layers[objects_name]
    for layer in viewer.layers:
        layer.visible = layer is image or layer is objects
    screenshot = _screenshot(viewer, args.output / "screenshot.png")
    saved = save_labels_tiff(
        args.output / f"{image.name}_objects.tif", objects.data, scale=objects.scale, overwrite=True
    )
    print(widget.status.value)
    _print_agreement(viewer, image.name, objects.data)
    print(f"screenshot: {screenshot.resolve()}")
    print(f"labels:     {saved.resolve()}")
    if args.look_inside:
        _look_inside(viewer, inspect, image, args.output)
    if args.train:
        _train(viewer, trainer, image, args.train, args.output)
    viewer.close()
    return 0


def _wait_for(widget) -> None:
    from qtpy.QtWidgets import QApplication

    while widget.running:  # the worker runs in a thread; keep Qt's events flowing
        QApplication.processEvents()
        time.sleep(0.02)


def _screenshot(viewer, path: Path) -> Path:
    from qtpy.QtWidgets import QApplication

    try:  # close pop-up notifications so they do not cover the image
        from napari._qt.dialogs.qt_notification import NapariQtNotification

        for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
            toast.close()
    except (ImportError, AttributeError):
        pass
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.01)
    viewer.screenshot(str(path), canvas_only=False)
    return path


def _look_inside(viewer, docked, image, output: Path) -> None:
    """Average the effective receptive field, trained beside untrained, and show it."""
    dock, inspect = docked
    inspect.image.value = image
    inspect.n_positions.value = 50
    dock.raise_()
    inspect.average_receptive_field()
    _wait_for(inspect)
    shown = [layer for layer in viewer.layers if "receptive field" in layer.name]
    for layer in viewer.layers:
        layer.visible = layer is image or layer in shown
    if shown:  # zoom onto the averaged fields, beside the image
        lows = np.min([layer.extent.world[0][-2:] for layer in shown], axis=0)
        highs = np.max([layer.extent.world[1][-2:] for layer in shown], axis=0)
        viewer.scene.camera.center = tuple((lows + highs) / 2)
        viewer.scene.camera.zoom = 0.55 * min(
            np.array(viewer.window._qt_viewer.canvas.size) / (highs - lows)[::-1]
        )
    path = _screenshot(viewer, output / "look-inside.png")
    print(inspect.status.value)
    print(f"screenshot: {path.resolve()}")


def _train(viewer, docked, image, steps: int, output: Path) -> None:
    """Fine-tune the built-in model on the sample's ground truth, showing the live preview."""
    dock, trainer = docked
    dock.raise_()
    trainer.settings.steps.value = steps
    trainer.settings.preview_every.value = max(steps // 10, 1)
    trainer.settings.validate_every.value = max(steps // 4, 1)
    for layer in viewer.layers:
        layer.visible = layer is image
    viewer.reset_view()  # the receptive-field step leaves the camera on its heat maps
    trainer.start()
    _wait_for(trainer)
    path = _screenshot(viewer, output / "train.png")
    print(trainer.controls.status.value)
    print(f"screenshot: {path.resolve()}")


def _print_agreement(viewer, image_name: str, objects) -> None:
    """Compare with the sample's ground truth, when it has one."""
    truth = [layer for layer in viewer.layers if layer.name.endswith("ground truth")]
    if not truth:
        return
    found, expected = objects > 0, truth[0].data > 0
    iou = (found & expected).sum() / max((found | expected).sum(), 1)
    print(f"foreground IoU against the ground truth of {image_name}: {iou:.3f}")


if __name__ == "__main__":
    sys.exit(main())
