"""Saving the network trained here as a model file, with how it was made."""

from __future__ import annotations

from pathlib import Path

from magicgui.widgets import Container, FileEdit, PushButton

from ...core.model.files import save_model
from ...core.train import TrainingRun, trained_model_info
from .start_from import Start


class SaveModel(Container):
    """Where to save the trained network, and the button that does it."""

    def __init__(self):
        self.path = FileEdit(label="Save as", mode="w", filter="*.json")
        self.button = PushButton(text="Save model", enabled=False)
        super().__init__(widgets=[self.path, self.button], labels=True, label="")
        self.margins = (0, 0, 0, 0)

    def save(self, run: TrainingRun, start: Start) -> Path:
        """Save the network of `run` as safetensors + JSON; return the JSON file.

        Raises
        ------
        ValueError, OSError
            With a message for the user: no file chosen, or the file exists
            (it is never overwritten), or it cannot be written.
        """
        path = self.path.value
        if path is None or str(path) in ("", "."):
            raise ValueError("choose where to save the model (Save as)")
        info = trained_model_info(
            run,
            Path(path).stem,
            seed=start.seed,
            images=[pair.name for pair in start.pairs],
            validation_images=[pair.name for pair in start.validation],
            targets=start.targets,
            base=start.base,
            started_from=start.origin,
            # the object size is measured on the annotations as they are now, painting included
            annotations=[pair.annotated_image() for pair in start.pairs],
            pixel_size=_pixel_size(start.pairs[0].image) if start.pairs else None,
        )
        return save_model(path, run.model, info)


def _pixel_size(layer) -> float | None:
    """Return a layer's pixel size if it was set (napari's default scale of 1 means unknown)."""
    size = float(layer.scale[-1])
    return size if size != 1.0 else None
