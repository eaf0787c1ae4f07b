"""Dock widget: segment an image layer with a U-Net, in the background, with Cancel."""

from __future__ import annotations

from typing import Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSlider,
    FloatSpinBox,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.layers import Image, Labels
from napari.utils.notifications import show_info, show_warning

from ..core.device import available_devices
from ..core.images import converts_to_grayscale, image_channel_axis
from ..core.model.files import ModelFileError
from ..core.predict.objects import OBJECT_THRESHOLD
from ..core.predict.plausibility import training_diameter, unlike_training_warning
from ..core.predict.segment import Segmentation, iter_segment
from .background import BackgroundTask
from .docks import scroll_in_dock, status_line
from .layers import image_data, show_result, spatial_placement
from .model_chooser import ModelChooser
from .pickers import LayerPicker

# What the "Object diameter" choices ask `iter_segment` for; "in pixels" takes the number.
DIAMETER_CHOICES = {"automatic": "auto", "as trained": None, "in pixels": "pixels"}


class PredictWidget(Container):
    """Segment the chosen image with a built-in or saved model.

    Adds three layers over the image: the most likely class of each pixel
    (Labels), the separated objects (Labels), and the probability of each pixel
    belonging to an object (Image), each named after the image and the model
    ("nuclei_1 objects (nuclei)"). Running the same model again updates its
    layers; another model adds its own, to compare. A layer of the user's, or
    a result the user has corrected, is never changed, moved or replaced.
    """

    def __init__(self, napari_viewer: Any):
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self.image = LayerPicker(napari_viewer, "Image", Image)
        self.model = ModelChooser("Model", own_labels=False)
        self.threshold = FloatSlider(
            label="Object probability", value=OBJECT_THRESHOLD, min=0.05, max=0.95, step=0.05
        )
        self.min_size = SpinBox(label="Smallest object (px)", value=15, min=0, max=1_000_000)
        self.split_touching = CheckBox(text="Split touching objects", value=True)
        self.diameter_choice = ComboBox(
            label="Object diameter", choices=list(DIAMETER_CHOICES), value="automatic"
        )
        self.diameter = FloatSpinBox(
            label="Diameter (px)", value=30.0, min=0.5, max=10_000.0, step=1.0, visible=False
        )
        self.show_advanced = CheckBox(text="Advanced settings", value=False)
        self.tile_size = SpinBox(label="Tile size (px)", value=0, min=0, max=8192, step=8)
        self.batch_size = SpinBox(label="Tiles per batch", value=0, min=0, max=256)
        self.device = ComboBox(label="Device", choices=available_devices(), value="auto")
        self.run_button = PushButton(text="Segment")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress_bar = ProgressBar(value=0, min=0, max=1000, visible=False, label="")
        self.status = status_line()
        self._advanced = (self.tile_size, self.batch_size, self.device)
        self.extend(
            [
                self.image,
                self.model,
                self.threshold,
                self.min_size,
                self.split_touching,
                self.diameter_choice,
                self.diameter,
                self.show_advanced,
                *self._advanced,
                self.run_button,
                self.cancel_button,
                self.progress_bar,
                self.status,
            ]
        )
        for widget in self._advanced:
            widget.visible = False
        self.task = BackgroundTask(
            progress_bar=self.progress_bar,
            status=self.status,
            cancel_button=self.cancel_button,
            buttons=[self.run_button],
            activity="segmentation",
            memory_advice="try a smaller tile size or fewer tiles per batch (Advanced settings), "
            "or close other programs",
        )
        self.show_advanced.changed.connect(self._toggle_advanced)
        self.diameter_choice.changed.connect(
            lambda choice: setattr(self.diameter, "visible", choice == "in pixels")
        )
        self.image.changed.connect(self._suit_model)
        self._suit_model()
        self.run_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)
        self.image.tooltip = "The image to segment (2D, or a stack segmented slice by slice)."
        self.threshold.tooltip = (
            "Objects start from pixels more likely than this to be an object, and grow over "
            "pixels above half of it: higher separates touching objects better."
        )
        self.tile_size.tooltip = (
            "0: automatic (512 px on the CPU, 1024 px on a GPU, less if memory is short). "
            "Smaller tiles use less memory; the result is the same."
        )
        self.batch_size.tooltip = "0: automatic (4 on a GPU, 1 on the CPU)."
        self.diameter_choice.tooltip = (
            "Typical size of the objects in the image. The image is resized so the model sees "
            "them at the size it outlines best (its training size, or a little larger where its "
            "file records so), and the results are brought back to its size. "
            "Automatic: measured from a first segmentation; as trained: not resized."
        )
        scroll_in_dock(self)

    @property
    def object_diameter(self) -> str | float | None:
        """The object diameter to segment with: "auto", None (as trained) or pixels."""
        chosen = DIAMETER_CHOICES[self.diameter_choice.value]
        return self.diameter.value if chosen == "pixels" else chosen

    def _suit_model(self, _layer=None) -> None:
        # stained tissue is offered the built-in model that takes colours, the rest the default
        layer = self.image.value
        if layer is not None:
            self.model.suit_image(image_data(layer), layer.rgb)

    def _toggle_advanced(self, shown: bool) -> None:
        for widget in self._advanced:
            widget.visible = shown

    # -------------------------------------------------------------- running
    @property
    def running(self) -> bool:
        """True while a segmentation runs in the background."""
        return self.task.running

    def start(self) -> None:
        """Check the inputs, then segment in a background thread."""
        if self.running:
            return
        try:
            layer, model, info, channel_axis = self._checked_inputs()
        except (ValueError, ModelFileError, OSError) as error:
            self.task.fail(str(error))
            return
        data = image_data(layer)
        self.task.start(
            iter_segment,
            model,
            info,
            data,
            rgb=layer.rgb,
            tile_size=self.tile_size.value or "auto",
            batch_size=self.batch_size.value or None,
            device=self.device.value,
            threshold=self.threshold.value,
            min_size=self.min_size.value,
            split_touching=self.split_touching.value,
            object_diameter=self.object_diameter,
            on_result=lambda result: self._show_segmentation(
                result, layer, channel_axis, info.name
            ),
            message=f"Segmenting {layer.name} with {info.name}…",
        )

    def cancel(self) -> None:
        """Stop the running segmentation after the current batch of tiles."""
        self.task.cancel()

    def _checked_inputs(self):
        layer = self.image.value
        if layer is None:
            raise ValueError("choose an image layer to segment (File ▸ Open Sample to try one)")
        model, info = self.model.load()
        data = image_data(layer)
        channel_axis = None  # a grayscale model segments an RGB layer's luminance, in the worker
        if not converts_to_grayscale(info.config.in_channels, layer.rgb):
            channel_axis = image_channel_axis(tuple(data.shape), info.config.in_channels, layer.rgb)
        if 0 in data.shape:
            raise ValueError(f"the image {layer.name!r} is empty")
        return layer, model, info, channel_axis

    # -------------------------------------------------------------- results
    def _show_segmentation(
        self, result: Segmentation, layer: Image, channel_axis, model_name: str
    ) -> None:
        if layer not in self._viewer.layers:
            show_warning(f"{layer.name!r} was closed while it was segmented; result not shown")
            return
        placement = spatial_placement(layer, channel_axis, result.objects.ndim)
        outcomes = []
        shown = [
            (
                result.foreground,
                Image,
                "foreground probability",
                "probability",
                dict(
                    colormap="magma", contrast_limits=(0.0, 1.0), blending="additive", visible=False
                ),
            ),
            (result.classes, Labels, "classes", "classes", dict(visible=False)),
            (result.objects, Labels, "objects", "objects", {}),
        ]
        for data, kind, suffix, role, style in shown:
            new_layer, outcome = show_result(
                self._viewer,
                data,
                kind=kind,
                name=f"{layer.name} {suffix} ({model_name})",
                role=role,
                source=layer.name,
                model=model_name,
                **placement,
                **style,
            )
            new_layer.metadata["object_size"] = {
                "object_diameter": result.object_diameter,  # px; None: as trained or none found
                "scale": result.scale,
                "note": result.size_note,
            }
            if outcome == "kept edited":
                outcomes.append(f"kept your edited layer; new result in {new_layer.name!r}")
        count = int(result.objects.max())  # objects are numbered 1..N
        found = f"Found {count} objects in {layer.name} with {model_name}."
        notes = [f"{result.image_note}." if result.image_note else "", result.size_note]
        self.status.value = " ".join([found, *filter(None, notes), *outcomes])
        show_info(self.status.value)
        # an image unlike the training images gives fragments, not an error: say so
        info = self.model.info
        diameter, larger = (
            (None, 1.0) if info is None else (training_diameter(info), info.shown_larger)
        )
        unlike = unlike_training_warning(result, self.min_size.value, diameter, shown_larger=larger)
        if unlike is not None:
            show_warning(
                f"{unlike} If it is wrong, correct a few objects on this image and fine-tune "
                "the model on them with U-Net: Train (start from this model)."
            )

    def close(self) -> None:  # noqa: D102
        self.cancel()
        self.image.stop_following()
        super().close()
