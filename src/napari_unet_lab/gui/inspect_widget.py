"""Dock widget: look inside a U-Net on your own image (feature maps, receptive fields)."""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.layers import Image, Points
from napari.utils.notifications import show_warning

from ..core.images import image_channel_axis, intensity_range_for
from ..core.look_inside.feature_maps import FeatureMap, feature_maps
from ..core.look_inside.geometry import stage_names
from ..core.look_inside.receptive_field import (
    EffectiveReceptiveField,
    PixelGradient,
    input_gradient,
    iter_effective_receptive_field,
    iter_trained_and_untrained,
)
from ..core.model.files import ModelFileError
from ..core.progress import Progress
from .background import BackgroundTask
from .layers import (
    PLUGIN_KEY,
    current_stack_index,
    image_axes,
    image_data,
    image_plane,
    show_result,
    spatial_placement,
    visible_region,
)
from .model_chooser import ModelChooser
from .receptive_field_layers import show_effective_receptive_fields, show_input_gradients

MAX_PROBED_PIXELS = 20  # gradients shown at once; the most recently placed points win
MAX_AVERAGED_PLANES = 32  # planes of a stack the average draws pixels from

EXPLAIN_FEATURES = (
    "What each stage of the network responds to: one layer per stage, one channel per "
    "slider step (most active first), each value drawn over the middle of the pixels it sees."
)
EXPLAIN_GRADIENT = (
    "Click pixels: the heat map shows how much each pixel of the image sways the network's "
    "answer there; the rectangle is the farthest it could possibly look."
)
EXPLAIN_AVERAGE = (
    "Averaged over many pixels, the part of that rectangle the network really uses: "
    "a blob much smaller than the rectangle, and training changes its size."
)


def _explanation(text: str) -> Label:
    label = Label(value=text)
    label.native.setWordWrap(True)
    return label


class InspectWidget(Container):
    """See what a U-Net responds to and how far it looks, on the chosen image.

    Three views, each adding layers over (or beside) the image: the feature maps
    of every stage; the input gradient at pixels the user clicks, with the
    theoretical receptive field as a rectangle; and the effective receptive
    field averaged over many pixels, beside that of an untrained network.
    """

    def __init__(self, napari_viewer: Any):
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self._probe_again = False
        self._loaded: tuple[Any, Any, Any] | None = None  # (key, model, info)
        self._points: Points | None = None
        self.image = ComboBox(label="Image", choices=self._image_choices, nullable=True)
        self.model = ModelChooser("Model")
        self.stage = ComboBox(label="Show stage", choices=self._stage_choices)
        self.features_button = PushButton(text="Show feature maps")
        self.class_name = ComboBox(label="Class", choices=self._class_choices)
        self.pick_button = PushButton(text="Click pixels to probe")
        self.n_positions = SpinBox(label="Pixels to average", value=100, min=1, max=100_000)
        self.compare = CheckBox(text="Beside an untrained network", value=True)
        self.average_button = PushButton(text="Average receptive field")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress_bar = ProgressBar(value=0, min=0, max=1000, visible=False, label="")
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        self.extend(
            [
                self.image,
                self.model,
                _explanation(EXPLAIN_FEATURES),
                self.stage,
                self.features_button,
                _explanation(EXPLAIN_GRADIENT),
                self.class_name,
                self.pick_button,
                _explanation(EXPLAIN_AVERAGE),
                self.n_positions,
                self.compare,
                self.average_button,
                self.cancel_button,
                self.progress_bar,
                self.status,
            ]
        )
        self.task = BackgroundTask(
            progress_bar=self.progress_bar,
            status=self.status,
            cancel_button=self.cancel_button,
            buttons=[self.features_button, self.pick_button, self.average_button],
            activity="looking inside the model",
            memory_advice="zoom in so less of the image is in view, average over fewer pixels, "
            "or close other programs",
            on_finished=self._probe_if_asked,
        )
        self.model.changed.connect(self._model_changed)
        self.stage.changed.connect(self._show_stage)
        self.features_button.changed.connect(self.show_feature_maps)
        self.pick_button.changed.connect(self.pick_pixels)
        self.average_button.changed.connect(self.average_receptive_field)
        self.cancel_button.changed.connect(self.cancel)
        events = self._viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self._refresh_layers)
        self._model_changed()

    # -------------------------------------------------------------- choices
    def _image_choices(self, _widget=None) -> list[tuple[str, Image]]:
        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, Image) and PLUGIN_KEY not in layer.metadata
        ]

    def _stage_choices(self, _widget=None) -> list[str]:
        info = self.model.info  # read when chosen: layer events never touch the file
        if info is None:
            return ["encoder 0"]
        return stage_names(info.config)

    def _class_choices(self, _widget=None) -> list[tuple[str, int]]:
        info = self.model.info
        names = info.class_names if info is not None else ["background", "object"]
        return [(name, index) for index, name in enumerate(names)]

    def _refresh_layers(self, _event=None) -> None:
        self.image.reset_choices()

    def _model_changed(self, _value=None) -> None:
        self.stage.reset_choices()
        self.class_name.reset_choices()
        classes = self.class_name.choices
        if len(classes) > 1 and self.class_name.value == classes[0]:
            self.class_name.value = classes[1]  # the first object class, not the background

    # -------------------------------------------------------------- inputs
    def _checked_inputs(self):
        """Return (image layer, model, info, channel axis), or raise ValueError for the user."""
        layer = self.image.value
        if layer is None:
            raise ValueError("choose an image layer to look at (File ▸ Open Sample to try one)")
        path = self.model.path
        if path is None:
            raise ValueError("choose a model file (.json or .safetensors)")
        key = (str(path), path.stat().st_mtime_ns)
        if self._loaded is None or self._loaded[0] != key:
            model, info = self.model.load()
            # fold batch norm once: every gradient after that is a plain pass
            self._loaded = (key, model.for_inference(), info)
        _, model, info = self._loaded
        data = image_data(layer)
        if 0 in data.shape:
            raise ValueError(f"the image {layer.name!r} is empty")
        channel_axis = image_channel_axis(tuple(data.shape), info.config.in_channels, layer.rgb)
        return layer, model, info, channel_axis

    def _placement(self, layer: Image, channel_axis: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Scale and translate of the image's (Y, X) axes."""
        placement = spatial_placement(layer, channel_axis, 2)
        return np.asarray(placement["scale"], float), np.asarray(placement["translate"], float)

    # -------------------------------------------------------------- running
    @property
    def running(self) -> bool:
        """True while a computation runs in the background."""
        return self.task.running

    def cancel(self) -> None:
        """Stop the running computation at its next progress step."""
        self.task.cancel()

    def _probe_if_asked(self) -> None:
        if self._probe_again:
            self._probe_again = False
            self.probe_points()

    def _checked(self):
        if self.running:
            return None
        try:
            return self._checked_inputs()
        except (ValueError, ModelFileError, OSError) as error:
            self.task.fail(str(error))
            return None

    # -------------------------------------------------------------- feature maps
    def show_feature_maps(self) -> None:
        """Compute the activations of every stage over the part of the image in view."""
        checked = self._checked()
        if checked is None:
            return
        layer, model, info, channel_axis = checked
        stack_index = current_stack_index(self._viewer, layer, channel_axis)
        plane = image_plane(layer, channel_axis, stack_index)
        region = visible_region(layer)
        data = image_data(layer)

        def work():
            yield Progress(0, 1, "computing feature maps")
            intensity_range = intensity_range_for(data, info.normalization)
            maps = feature_maps(model, plane, region=region, intensity_range=intensity_range)
            yield Progress(1, 1, "feature maps computed")  # a Cancel during the pass stops here
            return maps

        self.task.start(
            work,
            on_result=lambda maps: self._show_feature_maps(maps, layer, channel_axis, stack_index),
            message=f"Computing feature maps of {layer.name}…",
        )

    def _show_feature_maps(
        self, maps: list[FeatureMap], layer: Image, channel_axis, stack_index: list[int]
    ) -> None:
        if layer not in self._viewer.layers:
            show_warning(f"{layer.name!r} was closed meanwhile; feature maps not shown")
            return
        placement = spatial_placement(layer, channel_axis, len(stack_index) + 2)
        stack_scale = np.asarray(placement["scale"][:-2], float)
        stack_translate = np.asarray(placement["translate"][:-2], float)
        scale, translate = self._placement(layer, channel_axis)
        for feature in maps:
            # (C, [1 per stack axis], Y, X): channels on their own slider, at this plane
            data = feature.activations.reshape(
                feature.activations.shape[:1]
                + (1,) * len(stack_index)
                + feature.activations.shape[1:]
            )
            low, high = np.percentile(feature.activations, [0.5, 99.5])
            limits = (float(low), float(high) if high > low else float(low) + 1.0)
            shown, _ = show_result(
                self._viewer,
                data,
                kind=Image,
                name=f"{layer.name} {feature.stage}",
                role=f"features {feature.stage}",
                source=layer.name,
                scale=[1.0, *stack_scale, *(scale * feature.step)],
                translate=[
                    0.0,
                    *(stack_translate + stack_scale * np.asarray(stack_index)),
                    *(translate + scale * np.asarray(feature.origin)),
                ],
                colormap="viridis",
                visible=feature.stage == self.stage.value,
            )
            shown.contrast_limits_range = limits
            shown.contrast_limits = limits
        height, width = maps[0].activations.shape[1:]
        worst = max(feature.misalignment for feature in maps)
        self.status.value = (
            f"Feature maps of {len(maps)} stages over {height} x {width} pixels of "
            f"{layer.name}; slide the first axis through channels, most active first. "
            f"Each value lies within {worst:g} px of the centre of what it sees."
        )

    def _show_stage(self, stage: str) -> None:
        for layer in self._viewer.layers:
            mark = layer.metadata.get(PLUGIN_KEY, {})
            if isinstance(mark, dict) and str(mark.get("role", "")).startswith("features "):
                layer.visible = mark["role"] == f"features {stage}"

    # -------------------------------------------------------------- gradients at pixels
    def pick_pixels(self) -> None:
        """Add (or select) a points layer over the image: each click probes a pixel."""
        layer = self.image.value
        if layer is None:
            self.task.fail("choose an image layer to look at (File ▸ Open Sample to try one)")
            return
        points = self._points
        if points is not None and points.metadata[PLUGIN_KEY]["source"] != layer.name:
            points.events.data.disconnect(self._points_changed)  # kept, but for another image
            points = None
        if points is None or points not in self._viewer.layers:
            ndim = image_data(layer).ndim - (1 if layer.rgb else 0)
            placement = {
                key: list(value)[-ndim:]
                for key, value in (("scale", layer.scale), ("translate", layer.translate))
            }
            points = Points(
                ndim=ndim,
                name=f"{layer.name} probed pixels",
                size=max(layer.scale[-2:]) * 4,
                face_color="cyan",
                metadata={PLUGIN_KEY: {"role": "probed pixels", "source": layer.name}},
                **placement,
            )
            self._viewer.add_layer(points)
            points.events.data.connect(self._points_changed)
            self._points = points
        self._viewer.layers.selection.active = points
        points.mode = "add"
        self.status.value = "Click pixels of the image; each one shows its input gradient."

    def _points_changed(self, event) -> None:
        if str(getattr(event, "action", "")) in ("added", "removed", "changed"):
            self.probe_points()

    def probe_points(self) -> None:
        """Compute the input gradient at every placed point (the latest ones first)."""
        if self.running:
            self._probe_again = True
            return
        checked = self._checked()
        if checked is None or self._points is None or len(self._points.data) == 0:
            return
        layer, model, info, channel_axis = checked
        class_index = self.class_name.value
        data = image_data(layer)
        stack, spatial = image_axes(layer, channel_axis)
        requests = []
        for point in self._points.data[-MAX_PROBED_PIXELS:]:
            position = np.round(layer.world_to_data(self._points.data_to_world(point)))
            pixel = tuple(int(position[axis]) for axis in spatial)
            if all(0 <= p < data.shape[axis] for p, axis in zip(pixel, spatial, strict=True)):
                requests.append(([int(position[axis]) for axis in stack], pixel))
        if not requests:
            self.status.value = "The points lie outside the image."
            return

        def work():
            intensity_range = intensity_range_for(data, info.normalization)
            results = []
            for done, (stack_index, pixel) in enumerate(requests):
                yield Progress(done, len(requests), "computing input gradients")
                plane = image_plane(layer, channel_axis, stack_index)
                results.append(
                    input_gradient(
                        model,
                        plane,
                        pixel,
                        class_index=class_index,
                        intensity_range=intensity_range,
                    )
                )
            return results

        class_name = info.class_names[class_index]
        self.task.start(
            work,
            on_result=lambda results: self._show_gradients(
                results, layer, channel_axis, class_name
            ),
            message="Computing input gradients…",
        )

    def _show_gradients(
        self, results: list[PixelGradient], layer: Image, channel_axis, class_name: str
    ) -> None:
        if layer not in self._viewer.layers:
            return
        scale, translate = self._placement(layer, channel_axis)
        show_input_gradients(self._viewer, results, layer.name, scale, translate)
        if self._points is not None and self._points in self._viewer.layers:
            self._viewer.layers.selection.active = self._points  # keep clicking
        size = results[-1].window[0][1] - results[-1].window[0][0] + 1
        self.status.value = (
            f"Input gradient of {class_name!r} at {len(results)} pixel(s), each scaled to "
            f"its peak; the rectangle spans the {size} px it could depend on."
        )
        if not results[-1].magnitude.any():
            self.status.value = (
                f"The {class_name!r} score at the last pixel does not depend on the image: "
                "every path to it is switched off (ReLUs at zero). Try another pixel or class."
            )

    # -------------------------------------------------------------- averaged over pixels
    def average_receptive_field(self) -> None:
        """Average the input gradient over many pixels, optionally beside an untrained network."""
        checked = self._checked()
        if checked is None:
            return
        layer, model, info, channel_axis = checked
        data = image_data(layer)
        stack, _ = image_axes(layer, channel_axis)
        stack_shape = [data.shape[axis] for axis in stack]
        planes = [
            image_plane(layer, channel_axis, list(index))
            for index in list(np.ndindex(*stack_shape))[:MAX_AVERAGED_PLANES]
        ]
        settings = dict(
            n_positions=self.n_positions.value,
            class_index=self.class_name.value,
        )
        compare = self.compare.value

        def work():
            settings["intensity_range"] = intensity_range_for(data, info.normalization)
            if compare:
                return (yield from iter_trained_and_untrained(model, planes, **settings))
            return ((yield from iter_effective_receptive_field(model, planes, rng=0, **settings)),)

        self.task.start(
            work,
            on_result=lambda fields: self._show_averages(fields, layer, channel_axis, model),
            message=f"Averaging over {self.n_positions.value} pixels…",
        )

    def _show_averages(
        self, fields: tuple[EffectiveReceptiveField, ...], layer: Image, channel_axis, model
    ) -> None:
        if layer not in self._viewer.layers:
            return
        scale, translate = self._placement(layer, channel_axis)
        width = image_data(layer).shape[-2 if layer.rgb else -1]
        radii = show_effective_receptive_fields(
            self._viewer, fields, layer.name, scale, translate + scale * (0.0, width + 10.0)
        )
        self._viewer.reset_view()
        self.status.value = (
            f"Effective radius (2σ of a Gaussian fitted to the peak): "
            f"{', '.join(radii) or 'none, no gradient reached the image'}; "
            f"the theoretical receptive field is {model.receptive_field} px across."
        )

    def close(self) -> None:  # noqa: D102
        self.cancel()
        events = self._viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.disconnect(self._refresh_layers)
        if self._points is not None:
            self._points.events.data.disconnect(self._points_changed)
        super().close()
