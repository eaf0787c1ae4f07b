"""Dock widget: fine-tune a U-Net on annotated layers, watching it learn, with Pause and Stop."""

from __future__ import annotations

import copy
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    Select,
    SpinBox,
)
from napari.layers import Image, Labels, Shapes
from napari.utils.notifications import show_info
from qtpy.QtCore import QTimer

from ..core.config import AugmentationConfig, UNetConfig
from ..core.device import available_devices, select_device
from ..core.model.files import ModelFileError, ModelInfo, builtin_models, load_model, save_model
from ..core.model.unet import UNet, randomly_initialised
from ..core.train.run import (
    LOSSES,
    AnnotatedImage,
    Preview,
    TrainingProgress,
    TrainingRun,
    TrainingSettings,
    prepare_training,
)
from ..core.train.targets import rectangles_mask
from .background import BackgroundTask
from .layers import image_data, refresh_result, show_result, visible_region
from .training_plot import TrainingPlot

NEW_NETWORK = "new network (random weights)"
CONTINUE = "the network trained here (go on)"
MODEL_FROM_FILE = "model file…"
KINDS = [
    ("objects (each its own label)", "objects"),
    ("scribbles (1 = background, 2… = classes)", "scribbles"),
]
PREVIEW_PIXELS = 512  # edge of the largest preview, so it refreshes in well under a second


def _as_training_image(layer: Image) -> np.ndarray:
    """Return a layer's pixels as (Y, X), or (C, Y, X) for RGB; refuse stacks."""
    data = np.asarray(image_data(layer))
    if layer.rgb:
        data = np.moveaxis(data, -1, 0)[:3]
    elif data.ndim != 2:
        raise ValueError(
            f"{layer.name!r} has {data.ndim} dimensions {data.shape}; training takes 2D "
            "images (or RGB): open single planes as their own layers"
        )
    return data


def _region_of(shapes: Shapes | None, labels: Labels) -> np.ndarray | None:
    """Return the pixels inside the rectangles of a Shapes layer, in the labels' pixel grid."""
    if shapes is None:
        return None
    boxes = []
    for corners in shapes.data:
        # shapes' data coordinates → world → the labels layer's pixels
        pixels = [labels.world_to_data(shapes.data_to_world(c)) for c in corners]
        pixels = np.asarray(pixels)[:, -2:]
        (top, left), (bottom, right) = pixels.min(axis=0), pixels.max(axis=0)
        boxes.append((top, left, bottom, right))
    if not boxes:
        raise ValueError(f"{shapes.name!r} has no rectangles: draw some, or train on everything")
    return rectangles_mask(labels.data.shape[-2:], boxes)


def _train_in_background(
    preparation: Generator,
    widget: TrainWidget,
    preview_every: int,
    w0: float,
    sigma: float,
) -> Generator[Any, None, TrainingRun]:
    """Prepare, then train; between steps take up new annotations and make previews.

    Yields `Progress` while preparing, the `TrainingRun` once, then
    `TrainingProgress` per step, a `Preview` every `preview_every` steps, and
    messages (str) about annotations painted meanwhile. Only thread-safe parts
    of the widget are read: its queue of new annotations and its preview request.
    """
    run = yield from preparation
    yield run
    steps = run.run()
    while True:
        for index, item in widget.take_new_annotations():
            try:
                run.set_annotation(index, item.target(w0, sigma))
                yield f"Training now uses the new annotations of {item.name}."
            except ValueError as error:
                yield f"New annotations not used yet: {error}"
        try:
            progress = next(steps)
        except StopIteration:
            return run
        yield progress
        request = widget.preview_request
        if request is not None and (progress.step % preview_every == 0 or progress.step == 1):
            index, region = request
            yield run.preview(widget.training_items[index].image, region, index)


class TrainWidget(Container):
    """Fine-tune a U-Net on one or more (image, annotations) pairs of layers.

    Annotations are objects (each object its own label, every pixel annotated)
    or scribbles (0 = not annotated, 1 = background, 2… = classes), optionally
    only inside the rectangles of a Shapes layer. While it trains, the loss and
    validation IoU are plotted and the prediction and its uncertainty on the
    current view refresh every few steps; annotations painted meanwhile are
    picked up. Save the model to use it in the Predict widget.
    """

    def __init__(self, napari_viewer: Any):
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self._pairs: list[tuple[Image, Labels, str, Shapes | None]] = []
        self.run: TrainingRun | None = None
        self.training_items: list[AnnotatedImage] = []
        self.preview_request: tuple[int, tuple[slice, slice]] | None = None
        self._watched: list[Labels] = []
        self._new_annotations: dict[int, AnnotatedImage] = {}
        self._lock = threading.Lock()
        self._pairs_used: list[tuple[Image, Labels, str, Shapes | None]] = []
        self._base_info: ModelInfo | None = None
        self._origin = ""
        self.image = ComboBox(label="Image", choices=self._layers_of(Image), nullable=True)
        self.annotations = ComboBox(
            label="Annotations", choices=self._layers_of(Labels), nullable=True
        )
        self.kind = ComboBox(label="Annotations are", choices=KINDS, value="objects")
        self.region = ComboBox(label="Only inside", choices=self._region_choices)
        self.add_pair = PushButton(text="Add pair")
        self.pairs = Select(label="Training pairs", choices=self._pair_choices)
        self.remove_pair = PushButton(text="Remove selected pairs")
        self.validation = ComboBox(label="Validate on", choices=self._validation_choices)
        self.start_from = ComboBox(label="Start from", choices=self._start_choices)
        self.model_file = FileEdit(label="Model file", filter="*.json *.safetensors", visible=False)
        self.steps = SpinBox(label="Steps", value=400, min=1, max=1_000_000)
        self.show_advanced = CheckBox(text="Advanced settings", value=False)
        self.learning_rate = FloatSpinBox(
            label="Learning rate", value=0.0, min=0.0, max=1.0, step=1e-4
        )
        self.loss = ComboBox(label="Loss", choices=list(LOSSES), value=TrainingSettings().loss)
        self.batch_size = SpinBox(label="Patches per step", value=4, min=1, max=256)
        self.patch_size = SpinBox(label="Patch size (px)", value=252, min=32, max=2048, step=4)
        self.elastic = CheckBox(text="Elastic deformation", value=True)
        self.freeze_encoder = CheckBox(text="Freeze the encoder", value=False)
        self.w0 = FloatSpinBox(label="Border weight w0", value=10.0, min=0.0, max=100.0)
        self.sigma = FloatSpinBox(label="Border width σ (px)", value=5.0, min=0.5, max=50.0)
        self.validate_every = SpinBox(label="Validate every (steps)", value=50, min=1, max=10**6)
        self.patience = SpinBox(label="Stop after no gain (validations)", value=0, min=0, max=1000)
        self.preview_every = SpinBox(label="Preview every (steps)", value=10, min=1, max=10**6)
        self.device = ComboBox(label="Device", choices=available_devices(), value="auto")
        self.seed = SpinBox(label="Seed", value=0, min=0, max=2**31 - 1)
        self.show_weights_button = PushButton(text="Show weight map")
        self.augment_button = PushButton(text="Show augmented patches")
        self.start_button = PushButton(text="Start")
        self.pause_button = PushButton(text="Pause", enabled=False)
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.progress_bar = ProgressBar(value=0, min=0, max=1000, visible=False, label="")
        self.status = Label(value="")
        self.save_path = FileEdit(label="Save as", mode="w", filter="*.json")
        self.save_button = PushButton(text="Save model", enabled=False)
        self._advanced = (
            self.learning_rate, self.loss, self.batch_size, self.patch_size, self.elastic,
            self.freeze_encoder, self.w0, self.sigma, self.validate_every, self.patience,
            self.preview_every, self.device, self.seed,
        )  # fmt: skip
        self.extend(
            [
                self.image, self.annotations, self.kind, self.region, self.add_pair,
                self.pairs, self.remove_pair, self.validation, self.start_from,
                self.model_file, self.steps, self.show_advanced, *self._advanced,
                self.show_weights_button, self.augment_button, self.start_button,
                self.pause_button, self.stop_button, self.progress_bar, self.status,
            ]
        )  # fmt: skip
        self.plot = TrainingPlot()
        self.native.layout().addWidget(self.plot)
        self.extend([self.save_path, self.save_button])
        for widget in self._advanced:
            widget.visible = False
        self.learning_rate.tooltip = "0: automatic (1e-3 for a new network, 5e-4 to fine-tune)."
        self.kind.tooltip = (
            "Objects: every object its own label, everything else background. "
            "Scribbles: paint 1 on background and 2, 3… on each class; 0 is ignored."
        )
        self.region.tooltip = "Draw rectangles in a Shapes layer: only inside them counts."
        self.validation.tooltip = "A pair held out from training to measure IoU and Dice on."
        self.freeze_encoder.tooltip = "Train only the decoder: faster, keeps the base features."

        self.task = BackgroundTask(
            progress_bar=self.progress_bar,
            status=self.status,
            cancel_button=self.stop_button,
            buttons=[self.start_button, self.save_button, self.augment_button],
            activity="training",
            on_finished=self._finished,
        )
        self.show_advanced.changed.connect(self._toggle_advanced)
        self.start_from.changed.connect(self._start_from_changed)
        self.add_pair.changed.connect(self._add_pair)
        self.remove_pair.changed.connect(self._remove_pairs)
        self.start_button.changed.connect(self.start)
        self.pause_button.changed.connect(self.toggle_pause)
        self.stop_button.changed.connect(self.stop)
        self.save_button.changed.connect(self.save)
        self.show_weights_button.changed.connect(self.show_weight_map)
        self.augment_button.changed.connect(self.show_augmented_patches)
        events = self._viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self._refresh_layers)

    # -------------------------------------------------------------- choices
    def _layers_of(self, kind):
        return lambda _widget=None: [
            (layer.name, layer) for layer in self._viewer.layers if isinstance(layer, kind)
        ]

    def _region_choices(self, _widget=None):
        return [("whole image", None), *self._layers_of(Shapes)()]

    def _pair_name(self, pair) -> str:
        image, labels, kind, region = pair
        where = f", inside {region.name}" if region is not None else ""
        return f"{image.name} ← {labels.name} ({kind}{where})"

    def _pair_choices(self, _widget=None):
        return [(self._pair_name(pair), index) for index, pair in enumerate(self._pairs)]

    def _validation_choices(self, _widget=None):
        return [("nothing (train on all)", None), *self._pair_choices()]

    def _start_choices(self, _widget=None):
        models = [(f"{name} (built-in)", path) for name, path in builtin_models().items()]
        trained = [(CONTINUE, CONTINUE)] if getattr(self, "run", None) is not None else []
        return [*trained, *models, (NEW_NETWORK, NEW_NETWORK), (MODEL_FROM_FILE, MODEL_FROM_FILE)]

    def _refresh_layers(self, _event=None) -> None:
        layers = self._viewer.layers
        self._pairs = [
            (image, labels, kind, region)
            for image, labels, kind, region in self._pairs
            if image in layers and labels in layers and (region is None or region in layers)
        ]
        for widget in (self.image, self.annotations, self.region, self.pairs, self.validation):
            widget.reset_choices()

    def _toggle_advanced(self, shown: bool) -> None:
        for widget in self._advanced:
            widget.visible = shown

    def _start_from_changed(self, _value=None) -> None:
        self.model_file.visible = self.start_from.value == MODEL_FROM_FILE

    def _add_pair(self) -> None:
        image, labels = self.image.value, self.annotations.value
        if image is None or labels is None:
            self.task.fail("choose an image and its annotations (a Labels layer) first")
            return
        pair = (image, labels, self.kind.value, self.region.value)
        if pair not in self._pairs:
            self._pairs.append(pair)
        self.pairs.reset_choices()
        self.validation.reset_choices()

    def _remove_pairs(self) -> None:
        chosen = set(self.pairs.value)
        self._pairs = [pair for index, pair in enumerate(self._pairs) if index not in chosen]
        self.pairs.reset_choices()
        self.validation.reset_choices()

    # ---------------------------------------------------------------- inputs
    def _chosen_pairs(self):
        pairs = list(self._pairs)
        if not pairs:  # nothing added: the pair in the combo boxes
            if self.image.value is None or self.annotations.value is None:
                raise ValueError(
                    "choose an image and its annotations (a Labels layer; paint some first)"
                )
            pairs = [(self.image.value, self.annotations.value, self.kind.value,
                      self.region.value)]  # fmt: skip
        held_out = self.validation.value
        validation = [pairs[held_out]] if held_out is not None and held_out < len(pairs) else []
        training = [pair for index, pair in enumerate(pairs) if index != held_out]
        if not training:
            raise ValueError("keep at least one pair for training, not only for validation")
        return training, validation

    @staticmethod
    def _annotated_image(pair) -> AnnotatedImage:
        image, labels, kind, shapes = pair
        return AnnotatedImage(
            image=_as_training_image(image),
            annotation=np.array(labels.data),  # a copy: painting goes on meanwhile
            kind=kind,
            region=_region_of(shapes, labels),
            name=f"{labels.name!r}",
        )

    def _starting_model(self) -> tuple[UNet, ModelInfo | None, str]:
        choice = self.start_from.value
        image = self.training_items[0].image
        channels = 1 if image.ndim == 2 else image.shape[0]
        if choice == CONTINUE and self.run is not None:
            model = copy.deepcopy(self.run.model)
            if model.config.in_channels != channels:
                raise ValueError(
                    f"the network trained here takes {model.config.in_channels} channel(s) but "
                    f"the images have {channels}"
                )
            origin = self._origin if "go on" in self._origin else f"{self._origin} (go on)"
            return model, self._base_info, origin
        if choice == NEW_NETWORK:
            config = UNetConfig(in_channels=channels)
            return randomly_initialised(config, self.seed.value), None, "a new network"
        path = self.model_file.value if choice == MODEL_FROM_FILE else choice
        if path is None or not Path(path).is_file():
            raise ValueError("choose a model file (.json or .safetensors) to start from")
        model, info = load_model(path)
        if info.config.in_channels != channels:
            raise ValueError(
                f"{info.name!r} takes {info.config.in_channels} channel(s) but the images have "
                f"{channels}; start from a new network instead"
            )
        return model, info, info.name

    def _settings(self, fine_tuning: bool, info: ModelInfo | None) -> TrainingSettings:
        rate = self.learning_rate.value or (5e-4 if fine_tuning else 1e-3)
        extra = {"normalization": info.normalization} if info is not None else {}
        return TrainingSettings(
            steps=self.steps.value,
            batch_size=self.batch_size.value,
            patch_size=self.patch_size.value,
            learning_rate=rate,
            loss=self.loss.value,
            augmentation=AugmentationConfig(elastic=self.elastic.value),
            validate_every=self.validate_every.value,
            patience=self.patience.value,
            freeze_encoder=self.freeze_encoder.value,
            **extra,
        )

    # -------------------------------------------------------------- running
    @property
    def running(self) -> bool:
        """True while training runs (paused included)."""
        return self.task.running

    def start(self) -> None:
        """Check the layers, then prepare and train in a background thread."""
        if self.running:
            return
        try:
            training, validation = self._chosen_pairs()
            self.training_items = [self._annotated_image(pair) for pair in training]
            checks = [self._annotated_image(pair) for pair in validation]
            model, info, origin = self._starting_model()
            model = model.to(select_device(self.device.value))
            fine_tuning = info is not None or self.start_from.value == CONTINUE
            settings = self._settings(fine_tuning, info)
        except (ValueError, ModelFileError, OSError) as error:
            self.task.fail(str(error))
            return
        self._base_info, self._origin, self._pairs_used = info, origin, training
        self.run = None
        self.plot.clear(settings.steps)
        self._watch_annotations([pair[1] for pair in training])
        self._update_preview_request()
        if self.preview_request is not None:  # layers made now, not mid-training
            index, (rows, cols) = self.preview_request
            shape = (rows.stop - rows.start, cols.stop - cols.start)
            empty = np.zeros(shape, np.float32)
            self._show_preview(Preview(0, index, (rows, cols), empty.astype(np.uint8), empty))
        preparation = prepare_training(
            model, self.training_items, checks, settings, self.seed.value,
            self.w0.value, self.sigma.value,
        )  # fmt: skip
        self.task.start(
            _train_in_background,
            preparation,
            self,
            self.preview_every.value,
            self.w0.value,
            self.sigma.value,
            on_result=self._trained,
            on_yielded=self._record,
            message=f"Training from {origin}…",
        )
        self.pause_button.enabled = True
        self.pause_button.text = "Pause"

    def toggle_pause(self) -> None:
        """Pause training after the current step, or go on."""
        worker = self.task.worker
        if worker is None:
            return
        if worker.is_paused or self.pause_button.text == "Resume":
            worker.resume()
            self.pause_button.text = "Pause"
            self.save_button.enabled = False
            self.status.value = "Training…"
        else:
            worker.pause()
            self.pause_button.text = "Resume"
            self.save_button.enabled = True  # the weights stand still while paused
            self.status.value = "Paused; you can save the model now, or go on."

    def stop(self) -> None:
        """Stop after the current step; the network keeps what it learnt."""
        if self.task.worker is not None and self.pause_button.text == "Resume":
            self.task.worker.resume()  # a paused generator must run to see the stop
        self.task.cancel()

    def take_new_annotations(self) -> list[tuple[int, AnnotatedImage]]:
        """Return, and forget, annotations painted since they were last taken (any thread)."""
        with self._lock:
            taken = sorted(self._new_annotations.items())
            self._new_annotations.clear()
        return taken

    def _watch_annotations(self, layers: list[Labels]) -> None:
        self._unwatch_annotations()
        self._watched = layers
        for layer in layers:
            layer.events.paint.connect(self._annotation_painted)
            layer.events.data.connect(self._annotation_painted)

    def _unwatch_annotations(self) -> None:
        for layer in self._watched:
            layer.events.paint.disconnect(self._annotation_painted)
            layer.events.data.disconnect(self._annotation_painted)
        self._watched = []

    def _annotation_painted(self, event) -> None:
        layer = event.source
        for index, pair in enumerate(self._pairs_used):
            if pair[1] is layer:
                try:
                    item = self._annotated_image(pair)
                except ValueError as error:
                    self.status.value = str(error)
                    continue
                with self._lock:
                    self._new_annotations[index] = item

    def _update_preview_request(self) -> None:
        """Preview where the user looks: the visible part of a training image, capped."""
        if not self.training_items:
            return
        shown = [pair[0] for pair in self._pairs_used]
        current = self._viewer.layers.selection.active
        index = shown.index(current) if current in shown else 0
        height, width = self.training_items[index].image.shape[-2:]
        region = visible_region(shown[index]) or ((0, height), (0, width))
        (top, bottom), (left, right) = region
        rows = self._capped(top, bottom, height)
        cols = self._capped(left, right, width)
        self.preview_request = (index, (rows, cols))

    @staticmethod
    def _capped(start: int, stop: int, length: int) -> slice:
        start, stop = max(start, 0), min(stop, length)
        if stop <= start:
            start, stop = 0, length
        if stop - start > PREVIEW_PIXELS:  # keep the middle of the view
            start = (start + stop - PREVIEW_PIXELS) // 2
            stop = start + PREVIEW_PIXELS
        return slice(start, stop)

    def _record(self, record: Any) -> None:
        """Show what the worker reports; cheap, as it runs on napari's event loop."""
        if isinstance(record, TrainingRun):
            self.run = record
        elif isinstance(record, TrainingProgress):
            self.plot.add(record.step, record.loss, record.validation_iou)
            minutes, seconds = divmod(int(record.eta_seconds), 60)
            self.status.value = f"{record.message[:1].upper()}{record.message[1:]}; " + (
                f"about {minutes} min {seconds:02d} s left"
            )
            self._update_preview_request()
        elif isinstance(record, Preview):
            self._show_preview(record)
        elif isinstance(record, str):
            show_info(record)

    def _show_preview(self, preview: Preview) -> None:
        """Show a preview: one layer per turn of the event loop, so napari never waits long."""
        layer = self._pairs_used[preview.index][0]
        if layer not in self._viewer.layers:
            return
        rows, cols = preview.region
        scale = np.asarray(layer.scale)[-2:]
        translate = np.asarray(layer.translate)[-2:] + scale * (rows.start, cols.start)
        placement = {"scale": scale, "translate": translate}
        _, first = refresh_result(
            self._viewer, preview.classes, kind=Labels, name=f"{layer.name} preview",
            role="preview", source=layer.name, opacity=0.5, **placement,
        )  # fmt: skip

        def show_uncertainty() -> None:
            refresh_result(
                self._viewer, preview.uncertainty, kind=Image,
                name=f"{layer.name} uncertainty", role="uncertainty", source=layer.name,
                colormap="inferno", opacity=0.6, contrast_limits=(0.0, 1.0),
                blending="additive", **placement,
            )  # fmt: skip

        if first != "added":
            QTimer.singleShot(0, show_uncertainty)
            return
        show_uncertainty()
        # new layers land on top: put the annotations back above them, selected, so
        # painting goes on undisturbed
        annotations, layers = self._pairs_used[preview.index][1], self._viewer.layers
        if annotations in layers:
            layers.move(layers.index(annotations), len(layers))
            layers.selection.active = annotations

    def _trained(self, run: TrainingRun) -> None:
        result = run.result()
        self.run = run
        text = f"Trained {result.steps} steps in {result.seconds / 60:.1f} min"
        if result.validation is not None:
            text += (
                f"; validation IoU {result.validation.iou:.3f}, Dice "
                f"{result.validation.dice:.3f} (step {result.best_step}, kept)"
            )
        if result.stopped_early:
            text += "; stopped early: validation no longer improved"
        self.status.value = text + ". Save the model to use it."
        show_info(self.status.value)

    def _finished(self) -> None:
        self._unwatch_annotations()
        self.start_from.reset_choices()  # offers to go on with the network trained here
        self.pause_button.enabled = False
        self.pause_button.text = "Pause"
        self.save_button.enabled = self.run is not None
        if self.run is not None and "Cancel" in self.status.value:
            self.status.value = (
                f"Stopped at step {self.run.step}; the network keeps what it learnt: save it."
            )

    # ---------------------------------------------------------------- extras
    def save(self) -> None:
        """Save the trained network as a model file (safetensors + JSON)."""
        if self.run is None:
            self.task.fail("train first, then save the model")
            return
        path = self.save_path.value
        if path is None or str(path) in ("", "."):
            self.task.fail("choose where to save the model (Save as)")
            return
        run, base = self.run, self._base_info
        model = run.model
        n_classes = model.config.n_classes
        names = list(base.class_names) if base and len(base.class_names) == n_classes else [
            "background", *(f"class {c}" for c in range(1, n_classes))
        ]  # fmt: skip
        history = [(step, scores.iou, scores.dice) for step, scores in run.history]
        info = ModelInfo(
            config=model.config,
            class_names=names,
            normalization=run.settings.normalization,
            name=Path(path).stem,
            description=f"Fine-tuned from {self._origin} in napari-unet-lab.",
            training={**run.settings.to_dict(), "steps_done": run.step,
                      "seconds": round(run.seconds, 1), "seed": self.seed.value},
            provenance={"started_from": self._origin, "images": [
                self._pair_name(pair) for pair in self._pairs_used]},
            metrics={"validation": [
                {"step": s, "iou": round(i, 4), "dice": round(d, 4)} for s, i, d in history]},
        )  # fmt: skip
        try:
            saved = save_model(path, model, info)
        except (FileExistsError, ValueError, OSError) as error:
            self.task.fail(str(error))
            return
        self.status.value = f"Saved {saved}; choose it in the Predict widget as a model file."
        show_info(self.status.value)

    def _one_pair(self) -> tuple[AnnotatedImage, Image]:
        training, _ = self._chosen_pairs()
        pair = training[0]
        return self._annotated_image(pair), pair[0]

    def show_weight_map(self) -> None:
        """Show the loss weight of every pixel of the first pair as an image layer."""
        try:
            item, layer = self._one_pair()
            target = item.target(self.w0.value, self.sigma.value)
        except ValueError as error:
            self.task.fail(str(error))
            return
        show_result(
            self._viewer, target.weights, kind=Image, name=f"{layer.name} loss weights",
            role="weights", source=layer.name, colormap="viridis", scale=layer.scale[-2:],
            translate=layer.translate[-2:],
        )  # fmt: skip

    def show_augmented_patches(self) -> None:
        """Show a batch of training patches as the network will see them, with their classes."""
        try:
            item, layer = self._one_pair()
            model, info, _ = self._starting_model_for([item])
            settings = self._settings(info is not None, info)
            run = TrainingRun(model, [item.image], [item.target(self.w0.value,
                              self.sigma.value)], None, settings, self.seed.value)  # fmt: skip
        except (ValueError, ModelFileError, OSError) as error:
            self.task.fail(str(error))
            return
        images, classes, _ = run.batch()
        offset = run.offset
        show_result(
            self._viewer, images[:, 0].cpu().numpy(), kind=Image, name="augmented patches",
            role="augmented", source=layer.name, colormap="gray",
        )  # fmt: skip
        show_result(
            self._viewer, classes.cpu().numpy().astype(np.int32) + 1, kind=Labels,
            name="augmented classes (0 = ignored)", role="augmented classes",
            source=layer.name, translate=(0, offset, offset), opacity=0.4,
        )  # fmt: skip
        self.status.value = "Scroll through the patches; 1 is background, 2… the classes."

    def _starting_model_for(self, items):
        kept, self.training_items = self.training_items, items
        try:
            return self._starting_model()
        finally:
            self.training_items = kept

    def close(self) -> None:  # noqa: D102
        self.stop()
        self._unwatch_annotations()
        events = self._viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.disconnect(self._refresh_layers)
        super().close()
