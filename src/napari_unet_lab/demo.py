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
    from qtpy.QtWidgets import QApplication

    from .core.export import save_labels_tiff
    from .core.io import builtin_models

    if not builtin_models():
        print("napari-unet-lab: no built-in model is installed; reinstall the plugin.")
        return 1
    viewer = napari.Viewer(title="napari-unet-lab demo")
    viewer.open_sample("napari-unet-lab", args.sample)
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet-lab", "U-Net: Predict")
    image = next(layer for layer in viewer.layers if isinstance(layer, napari.layers.Image))
    widget.image.value = image
    widget.start()
    if not args.headless:
        napari.run()
        return 0

    while widget.running:  # the worker runs in a thread; keep Qt's events flowing
        QApplication.processEvents()
        time.sleep(0.02)
    objects_name = f"{image.name} objects"
    if objects_name not in viewer.layers:
        print(f"napari-unet-lab: segmentation did not finish: {widget.status.value}")
        return 1
    args.output.mkdir(parents=True, exist_ok=True)
    objects = viewer.layers[objects_name]
    viewer.layers[f"{image.name} classes"].visible = False
    for _ in range(10):
        QApplication.processEvents()
    screenshot = args.output / "screenshot.png"
    viewer.screenshot(str(screenshot), canvas_only=False)
    saved = save_labels_tiff(
        args.output / f"{image.name}_objects.tif", objects.data, scale=objects.scale, overwrite=True
    )
    print(widget.status.value)
    _print_agreement(viewer, image.name, objects.data)
    print(f"screenshot: {screenshot.resolve()}")
    print(f"labels:     {saved.resolve()}")
    viewer.close()
    return 0


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
