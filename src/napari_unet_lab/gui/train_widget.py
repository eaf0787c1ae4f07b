"""Dock widget: fine-tune a U-Net on annotated layers, watching it learn, with Pause and Stop."""

from __future__ import annotations

import math
import queue
from typing import Any

from magicgui.widgets import Container
from napari.layers import Layer
from napari.utils.notifications import show_info

from ..core.device import select_device
from ..core.model.files import ModelInfo
from ..core.model.unet import UNet
from ..core.train import (
    AnnotatedImage,
    Preview,
    PreviewRequest,
    TrainingProgress,
    TrainingResult,
    TrainingRun,
    prepare_training,
)
from .docks import scroll_in_dock
from .layers import image_data
from .train.controls import (
    RunControls,
    StartingScores,
    prepare_and_train,
    progress_text,
    result_text,
)
from .train.data_views import DataViews
from .train.live_view import LiveView
from .train.options import TrainingOptions
from .train.painting import PaintedAnnotations
from .train.pairs import TrainingPairs
from .train.saving import SaveModel
from .train.start_from import (
    CONTINUE,
    Start,
    channels_of,
    conversion_note,
    start_from_chooser,
    starting_model,
)


class TrainWidget(Container):
    """Fine-tune a U-Net on one or more (image, annotations) pairs of layers.

    Annotations are objects (each object its own label, every pixel annotated)
    or scribbles (0 = not annotated, 1 = background, 2… = classes), optionally
    only inside the rectangles of a Shapes layer. While it trains, the loss and
    validation IoU are plotted and the prediction and its uncertainty on the
    current view refresh every few steps; annotations painted meanwhile are
    picked up. Save the model to use it in the Predict widget. A Start that
    fails changes nothing: the network trained before stays, to save or go on.
    """

    def __init__(self, napari_viewer: Any):
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self.run: TrainingRun | None = None  # the network trained here, the latest started
        self.started: Start | None = None  # how `run` was started
        self._pending: Start | None = None  # a Start whose run is still being prepared
        self._room: list[Layer] = []  # preview layers that Start added, gone if it fails
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()  # the worker hears only this
        self._asked: PreviewRequest | None = None
        self._painted: PaintedAnnotations | None = None
        self.pairs = TrainingPairs(napari_viewer, tell=lambda text: self.controls.task.fail(text))
        self.start_from = start_from_chooser(lambda: self.run is not None)
        self.settings = TrainingOptions()
        self.saving = SaveModel()
        self.data_views = DataViews(
            napari_viewer, lambda: self.pairs.chosen()[0][0], self._starting_model,
            self.settings, fail=lambda text: self.controls.task.fail(text),
            tell=lambda text: self.controls.tell(text),
        )  # fmt: skip
        self.controls = RunControls(
            [self.saving.button, self.data_views.augment_button], self._finished, self._paused
        )
        self.data_views.task = self.controls.side_task(
            [self.data_views.weights_button, self.data_views.augment_button],
            activity="drawing augmented patches",
        )
        self.live = LiveView(napari_viewer)
        scroll_in_dock(self)
        self.extend([self.pairs, self.start_from, self.settings, self.data_views, self.controls])
        self.native.layout().addWidget(self.live.plot)
        self.append(self.saving)
        self.controls.start_button.changed.connect(self.start)
        self.saving.button.changed.connect(self.save)
        self.pairs.image.changed.connect(self._suit_start)
        events = self._viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self.pairs.reset_choices)

    def _suit_start(self, layer: Layer | None) -> None:
        # stained tissue is offered the built-in model that takes colours to start from
        if layer is not None:
            self.start_from.suit_image(image_data(layer), layer.rgb)

    # -------------------------------------------------------------- running
    @property
    def running(self) -> bool:
        """True while training runs (paused included)."""
        return self.controls.running

    def _trained_here(self) -> tuple[TrainingRun, Start] | None:
        return (self.run, self.started) if self.run is not None else None

    def _fine_tuning(self, base: ModelInfo | None) -> bool:
        return base is not None or self.start_from.choice.value == CONTINUE

    def _starting_model(self, item: AnnotatedImage) -> tuple[UNet, ModelInfo | None, str]:
        """Return the network "Start from" says, for images like `item`'s (see `starting_model`)."""
        seed = self.settings.seed.value
        channels = channels_of(item.image)
        return starting_model(self.start_from, channels, self._trained_here(), seed, item.rgb)

    def _new_start(self) -> tuple[Start, list, list]:
        """Read the layers and choices; raise ValueError (for the user) if they do not fit."""
        training, validation = self.pairs.chosen()
        items = [pair.annotated_image() for pair in training]
        checks = [pair.annotated_image() for pair in validation]
        model, base, origin = self._starting_model(items[0])
        settings = self.settings.training_settings(self._fine_tuning(base), base)
        model = model.to(select_device(self.settings.device.value))
        start = Start(model, base, origin, training, settings, self.settings.targets(),
                      self.settings.seed.value, validation)  # fmt: skip
        return start, items, checks

    def start(self) -> None:
        """Check the layers, then prepare and train in a background thread."""
        if self.running or self.data_views.task.running:
            return
        try:
            start, items, checks = self._new_start()
        except (ValueError, OSError) as error:  # a ModelFileError is a ValueError
            self.controls.task.fail(str(error))
            return
        self._pending, self._inbox = start, queue.SimpleQueue()
        self._asked = self.live.request(start.pairs)
        self._inbox.put(self._asked)
        self._room = self.live.make_room(self._asked, start.pairs[self._asked.index])
        self.live.bring_forward(start.pairs)  # what training shows, on top while it runs
        self._painted = PaintedAnnotations(start.pairs, self._inbox, tell=self.controls.tell)
        # fine-tuning sees the user's objects at the size the starting model knows
        # (benchmarks/README.md, "Fine-tuning at the model's object size")
        diameter = None if start.base is None else start.base.object_diameter
        preparation = prepare_training(
            start.model, items, checks, start.settings, start.seed, start.targets, diameter
        )
        note = conversion_note(start.model, [*items, *checks])
        if note:  # said once, as a notification: the status line follows the training
            show_info(f"{note}.")
        self.controls.run(
            prepare_and_train, preparation, self._inbox, self.settings.preview_every.value,
            start.targets, on_result=self._trained, on_yielded=self._record,
            message=f"Training from {start.origin}…",
        )  # fmt: skip

    def _record(self, record: Any) -> None:
        """Show what the worker reports; cheap, as it runs on napari's event loop."""
        if isinstance(record, TrainingRun):  # the Start succeeded: its run is the one here now
            self.run, self.started, self._pending, self._room = record, self._pending, None, []
            self.live.plot.clear(record.settings.steps)
        elif isinstance(record, TrainingProgress):
            if record.budget_fraction is not None:  # the x axis spans the steps expected
                self.live.plot.total_steps = max(record.total_steps, record.step, 1)
            self.live.plot.add(record.step, record.loss, record.validation_iou)
            self.controls.tell(progress_text(record))
            asked = self.live.request(self.started.pairs)
            if asked != self._asked:
                self._asked = asked
                self._inbox.put(asked)
        elif isinstance(record, StartingScores):  # the network as it starts: step 0
            self.live.plot.add(0, math.nan, record.scores.iou)
            self.controls.tell(f"Before training: validation IoU {record.scores.iou:.3f}")
        elif isinstance(record, Preview):
            self.live.show(record, self.started.pairs[record.index])
        elif isinstance(record, str):
            show_info(record)

    def _trained(self, result: TrainingResult) -> None:
        if result.validation is not None:
            self.live.plot.mark_kept(result.best_step)
        self.controls.announce(result_text(result))

    def _paused(self, paused: bool) -> None:
        self.saving.button.enabled = paused and self.run is not None  # weights stand still

    def _finished(self) -> None:
        if self._painted is not None:
            self._painted.stop()
        ran = self._pending is None
        if not ran:  # failed or stopped before its run existed: leave everything as it was
            self.live.remove(self._room)
            self._pending, self._room = None, []
        self.live.put_back()
        self.start_from.choice.reset_choices()  # offers to go on with the network trained here
        if ran and self.run is not None:
            self.start_from.choice.value = CONTINUE  # the next Start goes on from here
        self.saving.button.enabled = self.run is not None
        if ran and self.controls.stopping and self.run is not None:
            self.controls.tell(
                f"Stopped at step {self.run.step}; the network keeps what it learnt: save it."
            )

    # ---------------------------------------------------------------- extras
    def save(self) -> None:
        """Save the trained network as a model file (safetensors + JSON)."""
        if self.run is None:
            self.controls.task.fail("train first, then save the model")
            return
        try:
            saved = self.saving.save(self.run, self.started)
        except (ValueError, OSError) as error:  # FileExistsError is an OSError
            self.controls.task.fail(str(error))
            return
        self.controls.announce(f"Saved {saved}; choose it in the Predict widget as a model file.")

    def close(self) -> None:  # noqa: D102
        self.controls.stop()
        for picker in (self.pairs.image, self.pairs.annotations, self.pairs.region):
            picker.stop_following()
        if self._painted is not None:
            self._painted.stop()
        events = self._viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.disconnect(self.pairs.reset_choices)
        super().close()
