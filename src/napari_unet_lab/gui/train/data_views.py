"""What the network will learn from: the loss weight map, and augmented training patches."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import numpy as np
from magicgui.widgets import Container, PushButton
from napari.layers import Image, Labels

from ...core.config import TargetConfig
from ...core.model.files import ModelInfo
from ...core.model.unet import UNet
from ...core.progress import Progress
from ...core.train import AnnotatedImage, TrainingSettings, prepare_training
from ..background import BackgroundTask
from ..layers import image_data, show_result
from .options import TrainingOptions
from .pair import Pair


def first_batch(
    model: UNet,
    item: AnnotatedImage,
    settings: TrainingSettings,
    seed: int,
    targets: TargetConfig,
    resize_to_diameter: float | None = None,
) -> Generator[Progress, None, tuple[np.ndarray, np.ndarray, int]]:
    """Build the run as Start does and draw its first batch of augmented patches.

    Returns
    -------
    (ndarray, ndarray, int)
        The patches' first channel (N, H, W); their classes numbered as
        scribbles, 0 where not annotated (N, h, w); and the input pixel under
        class pixel 0 (the network's output offset).
    """
    run = yield from prepare_training(
        model, [item], (), settings, seed, targets, resize_to_diameter
    )
    images, classes, _ = run.batch()
    return images[:, 0].cpu().numpy(), classes.cpu().numpy().astype(np.int32) + 1, run.offset


class DataViews(Container):
    """Buttons showing the first pair as training sees it: loss weights, augmented patches.

    Parameters
    ----------
    viewer : napari.Viewer
        Where the layers go.
    first_pair : callable
        Returns the first training pair; raises ValueError if there is none.
    starting_model : callable
        Returns the network Start would train for an annotated image, its model
        file's description and its origin (`start_from.starting_model`).
    settings : TrainingOptions
        The training settings chosen.
    fail, tell : callable
        Show the user a problem, or what to look at.
    """

    def __init__(
        self,
        viewer: Any,
        first_pair: Callable[[], Pair],
        starting_model: Callable[[AnnotatedImage], tuple[UNet, ModelInfo | None, str]],
        settings: TrainingOptions,
        fail: Callable[[str], None],
        tell: Callable[[str], None],
    ):
        self.weights_button = PushButton(text="Show weight map")
        self.augment_button = PushButton(text="Show augmented patches")
        super().__init__(widgets=[self.weights_button, self.augment_button], label="")
        self.margins = (0, 0, 0, 0)
        self._viewer, self._first_pair, self._starting_model = viewer, first_pair, starting_model
        self._settings, self._fail, self._tell = settings, fail, tell
        self.task: BackgroundTask | None = None  # the Train widget's `RunControls.side_task`
        self.weights_button.changed.connect(self.show_weight_map)
        self.augment_button.changed.connect(self.show_augmented_patches)

    def show_weight_map(self) -> None:
        """Show the loss weight of every pixel of the first pair, over its image."""
        try:
            pair = self._first_pair()
            target = pair.annotated_image().target(self._settings.targets())
        except ValueError as error:
            self._fail(str(error))
            return
        image = pair.image
        show_result(
            self._viewer, target.weights, kind=Image, name=f"{image.name} loss weights",
            role="weights", source=image.name, colormap="viridis", scale=image.scale[-2:],
            translate=image.translate[-2:],
        )  # fmt: skip

    def show_augmented_patches(self) -> None:
        """Show the first batch of patches training would draw, with their classes.

        The run is built as Start builds it (`prepare_training`), in a worker
        thread, so the patches are those the network would see first; they are
        laid beside the image, not over it.
        """
        if self.task is None or self.task.running:
            return
        try:
            pair = self._first_pair()
            item = pair.annotated_image()
            model, base, _ = self._starting_model(item)
            settings = self._settings.training_settings(base is not None, base)
            seed, targets = self._settings.seed.value, self._settings.targets()
        except (ValueError, OSError) as error:  # a ModelFileError is a ValueError
            self._fail(str(error))
            return
        diameter = None if base is None else base.object_diameter
        self.task.start(
            first_batch, model, item, settings, seed, targets, diameter,
            on_result=lambda batch: self._show_patches(*batch, pair),
            message="Drawing augmented patches…",
        )  # fmt: skip

    def _show_patches(
        self, patches: np.ndarray, classes: np.ndarray, offset: int, pair: Pair
    ) -> None:
        image = pair.image
        if image not in self._viewer.layers:
            return
        scale = np.asarray(image.scale[-2:], float)
        width = image_data(image).shape[-2 if image.rgb else -1]
        beside = np.asarray(image.translate[-2:], float) + scale * (0.0, width + 10.0)
        source = image.name
        show_result(
            self._viewer, patches, kind=Image, name="augmented patches", role="augmented",
            source=source, colormap="gray", scale=(1.0, *scale), translate=(0.0, *beside),
        )  # fmt: skip
        shown, _ = show_result(
            self._viewer, classes, kind=Labels, name="augmented classes (0 = ignored)",
            role="augmented classes", source=source, scale=(1.0, *scale),
            translate=(0.0, *(beside + scale * offset)), opacity=0.4,
        )  # fmt: skip
        shown.colormap = pair.annotations.colormap  # the colours the user paints with
        self._tell(
            "Scroll through the patches, right of the image; 1 is background, 2… the classes."
        )
