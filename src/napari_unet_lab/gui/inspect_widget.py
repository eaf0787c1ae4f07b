"""Dock widget: look inside a U-Net on your own image (feature maps, receptive fields)."""

from __future__ import annotations

from collections.abc import Callable
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

from ..core.images import (
    converts_to_grayscale,
    grayscale,
    image_channel_axis,
    image_for_model,
    intensity_range_for,
)
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
from .docks import scroll_in_dock, status_line
from .layers import (
    PLUGIN_KEY,
    current_stack_index,
    image_axes,
    image_data,
    image_plane,
    spatial_placement,
    visible_region,
    was_edited,
)
from .model_chooser import ModelChooser
from .pickers import LayerPicker, made_by_user
from .receptive_field_layers import (
    LOOK_INSIDE_ROLES,
    keeping_the_view,
    reading_of_radius,
    show_effective_receptive_fields,
    show_feature_map,
    show_input_gradients,
    why_the_rectangles_differ,
)


def model_plane(layer: Image, info: Any, channel_axis: int | None, stack_index: list[int]) -> Any:
    """Return one plane as the model takes it (`image_plane`), as prediction converts it.

    A grayscale model takes an RGB layer's luminance (`core.images.grayscale`).
    """
    plane = image_plane(layer, channel_axis, stack_index)  # RGB: (C, Y, X)
    if converts_to_grayscale(info.config.in_channels, layer.rgb):
        return grayscale(plane, channel_axis=0)
    return plane


def model_intensity_range(data: Any, rgb: bool, info: Any) -> tuple[float, float]:
    """Return the range the model's normalisation maps to 0 and 1, on the image it takes."""
    data, _, _ = image_for_model(data, info.config.in_channels, rgb)
    return intensity_range_for(data, info.normalization)


MAX_PROBED_PIXELS = 20  # gradients shown at once; the most recently placed points win
MAX_AVERAGED_PLANES = 32  # planes of a stack the average draws pixels from

EXPLAIN_FEATURES = (
    "What each stage of the network responds to: the stage chosen below, one channel per "
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
    return status_line(text)


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
        # every stage's maps, shown one at a time: (maps, image, channel axis, stack index)
        self._maps: tuple[list[FeatureMap], Image, Any, list[int]] | None = None
        self._model_number = 0  # counts model changes: a result of an earlier model is dropped
        self._results_from: Any = None  # the model file the layers shown come from
        self.image = LayerPicker(napari_viewer, "Image", Image, accept=made_by_user)
        self.model = ModelChooser("Model", own_labels=False)
        self.stage = ComboBox(label="Show stage", choices=self._stage_choices)
        self.features_button = PushButton(text="Show feature maps")
        self.class_name = ComboBox(label="Class", choices=self._class_choices)
        self.pick_button = PushButton(text="Click pixels to probe")
        self.n_positions = SpinBox(label="Pixels to average", value=100, min=1, max=100_000)
        self.compare = CheckBox(text="Beside an untrained network", value=True)
        self.average_button = PushButton(text="Average receptive field")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress_bar = ProgressBar(value=0, min=0, max=1000, visible=False, label="")
        self.status = status_line()
        scroll_in_dock(self)
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
        self._model_changed()

    # -------------------------------------------------------------- choices
    def _stage_choices(self, _widget=None) -> list[str]:
        info = self.model.info  # read when chosen: layer events never touch the file
        if info is None:
            return ["encoder 0"]
        return stage_names(info.config)

    def _class_choices(self, _widget=None) -> list[tuple[str, int]]:
        info = self.model.info
        names = info.class_names if info is not None else ["background", "object"]
        return [(name, index) for index, name in enumerate(names)]

    def _model_changed(self, _value=None) -> None:
        changed = self._results_from != self.model.path
        if changed:
            self._forget_results()
        self.stage.reset_choices()
        self.class_name.reset_choices()
        classes = self.class_name.choices
        if len(classes) > 1 and self.class_name.value == classes[0]:
            self.class_name.value = classes[1]  # the first object class, not the background
        points = self._points
        clicked = points is not None and points in self._viewer.layers and len(points.data) > 0
        if changed and clicked and self.model.path is not None:
            self.probe_points()  # the clicked pixels stay: probed again with this model

    def _forget_results(self) -> None:
        """Remove the layers the previous model made; drop its results still on their way."""
        self._model_number += 1
        self.cancel()
        self._maps, self._results_from = None, self.model.path
        stale = [
            layer
            for layer in self._viewer.layers
            if layer.metadata.get(PLUGIN_KEY, {}).get("role") in LOOK_INSIDE_ROLES
            and not was_edited(layer)  # a result the user changed is theirs now
        ]
        for layer in stale:
            self._viewer.layers.remove(layer)

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
        channel_axis = None  # a grayscale model looks at an RGB layer's luminance
        if not converts_to_grayscale(info.config.in_channels, layer.rgb):
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

    def _of_this_model(self, show: Callable[[Any], None]) -> Callable[[Any], None]:
        """Wrap `show`: a result that arrives after the model changed is dropped."""
        number = self._model_number
        return lambda result: show(result) if number == self._model_number else None

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
        plane = model_plane(layer, info, channel_axis, stack_index)
        region = visible_region(layer)
        data = image_data(layer)

        def work():
            yield Progress(0, 1, "computing feature maps")
            intensity_range = model_intensity_range(data, layer.rgb, info)
            maps = feature_maps(model, plane, region=region, intensity_range=intensity_range)
            yield Progress(1, 1, "feature maps computed")  # a Cancel during the pass stops here
            return maps

        self.task.start(
            work,
            on_result=self._of_this_model(
                lambda maps: self._show_feature_maps(maps, layer, channel_axis, stack_index)
            ),
            message=f"Computing feature maps of {layer.name}…",
        )

    def _show_feature_maps(
        self, maps: list[FeatureMap], layer: Image, channel_axis, stack_index: list[int]
    ) -> None:
        if layer not in self._viewer.layers:
            show_warning(f"{layer.name!r} was closed meanwhile; feature maps not shown")
            return
        self._maps = (maps, layer, channel_axis, stack_index)
        self._show_stage(self.stage.value)
        height, width = maps[0].activations.shape[1:]
        worst = max(feature.misalignment for feature in maps)
        self.status.value = (
            f"Feature maps of {len(maps)} stages over {height} x {width} pixels of "
            f"{layer.name}; choose the stage above, slide the first axis through its channels, "
            f"most active first. Each value lies within {worst:g} px of the centre of what it sees."
        )

    def _show_stage(self, stage: str) -> None:
        """Show the chosen stage's maps in the feature-map layer (see `show_feature_map`)."""
        if self._maps is None:
            return
        maps, layer, channel_axis, stack_index = self._maps
        feature = next((f for f in maps if f.stage == stage), None)
        if feature is None or layer not in self._viewer.layers:
            return
        with keeping_the_view(self._viewer):
            show_feature_map(self._viewer, feature, layer, channel_axis, stack_index)

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
            intensity_range = model_intensity_range(data, layer.rgb, info)
            results = []
            for done, (stack_index, pixel) in enumerate(requests):
                yield Progress(done, len(requests), "computing input gradients")
                plane = model_plane(layer, info, channel_axis, stack_index)
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
            on_result=self._of_this_model(
                lambda results: self._show_gradients(results, layer, channel_axis, class_name)
            ),
            message="Computing input gradients…",
        )

    def _show_gradients(
        self, results: list[PixelGradient], layer: Image, channel_axis, class_name: str
    ) -> None:
        if layer not in self._viewer.layers:
            return
        scale, translate = self._placement(layer, channel_axis)
        with keeping_the_view(self._viewer):
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
            model_plane(layer, info, channel_axis, list(index))
            for index in list(np.ndindex(*stack_shape))[:MAX_AVERAGED_PLANES]
        ]
        settings = dict(
            n_positions=self.n_positions.value,
            class_index=self.class_name.value,
        )
        compare = self.compare.value

        def work():
            settings["intensity_range"] = model_intensity_range(data, layer.rgb, info)
            if compare:
                return (yield from iter_trained_and_untrained(model, planes, **settings))
            return ((yield from iter_effective_receptive_field(model, planes, rng=0, **settings)),)

        self.task.start(
            work,
            on_result=self._of_this_model(
                lambda fields: self._show_averages(fields, layer, channel_axis, model)
            ),
            message=f"Averaging over {self.n_positions.value} pixels…",
        )

    def _show_averages(
        self, fields: tuple[EffectiveReceptiveField, ...], layer: Image, channel_axis, model
    ) -> None:
        if layer not in self._viewer.layers:
            return
        scale, translate = self._placement(layer, channel_axis)
        width = image_data(layer).shape[-2 if layer.rgb else -1]
        with keeping_the_view(self._viewer):  # beside the image, out of view maybe: said below
            radii = show_effective_receptive_fields(
                self._viewer, fields, layer.name, scale, translate + scale * (0.0, width + 10.0)
            )
        self.status.value = (
            f"{reading_of_radius(fields)} Shown right of the image; effective radius (2σ of a "
            f"Gaussian fitted to the peak): "
            f"{', '.join(radii) or 'none, no gradient reached the image'}. "
            f"{why_the_rectangles_differ(model, fields[0])}"
        )

    def close(self) -> None:  # noqa: D102
        self.cancel()
        self.image.stop_following()
        if self._points is not None:
            self._points.events.data.disconnect(self._points_changed)
        super().close()
