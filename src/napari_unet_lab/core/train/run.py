"""Training a U-Net on annotated images, as a generator of small progress records.

A `TrainingRun` draws random patches of the size the network accepts, deforms
them on the training device (`augment.augment_batch`) and takes one optimiser
step per batch on the loss of `losses.training_loss`. It can be stepped
through, validated, previewed, saved and resumed. Build one from annotated
images with `pipeline.prepare_training`, the one way every caller does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from ..device import autocast, autocast_dtype
from ..images import channels_first, intensity_range_for, normalised
from ..model.unet import UNet
from ..predict.tile_plan import mirror_indices
from .augment import augment_batch
from .losses import training_loss
from .records import TrainingClock, TrainingProgress, TrainingResult
from .settings import TrainingSettings
from .targets import TrainingTarget
from .validation import Preview, ValidationScores, class_map, region_preview, validation_scores


# -------------------------------------------------------------------------- run
def _encoder_modules(model: UNet) -> list[torch.nn.Module]:
    return [*model.encoders, model.bottleneck]


class TrainingRun:
    """A training run that can be stepped through, saved and resumed.

    Parameters
    ----------
    model : UNet
        The network to train, in place, on the device it is on.
    images : sequence of (Y, X) or (C, Y, X) arrays
        Raw training images (C = the model's input channels); each is kept
        as the network sees it, (C, Y, X) float32 (`images.normalised` with
        ``settings.normalization``), the same values prediction gives it.
    targets : sequence of TrainingTarget or (Y, X) int arrays
        Classes per pixel, negative where not annotated (see
        `targets.training_target`).
    weights : sequence of (Y, X) float arrays, optional
        Loss weight per pixel (see `border_weight_map`); taken from the
        targets when those are `TrainingTarget`.
    settings : TrainingSettings, optional
        How to train.
    rng : int or numpy.random.Generator, optional
        Source of all randomness of the run: patch positions and augmentation.
        The model's initial weights are the caller's.
    validation : sequence of (image, target) pairs, optional
        Held-out raw images and their annotations (TrainingTarget, class
        arrays or boolean object masks), for `validation_scores`.
    clock : callable, optional
        Returns seconds; what the time budget and the time left are measured with.

    Attributes
    ----------
    images, targets, weights : list of arrays
        What patches are cut from: normalised (C, Y, X) images, classes, weights.
    class_weights : ndarray or None
        Class weights all images share, as `pipeline.prepare_training` set them.
    timing : TrainingClock
        Time spent (against ``settings.minutes``, if set) and the estimate of the time left.

    Notes
    -----
    Patches have the input size the network accepts; targets and weights are
    cut with the same window, deformed with the image, then cropped to the
    output window (`augment_batch`). Where a patch reaches past the image, the
    image is mirrored, as in prediction. Patch centres are drawn among object
    pixels (``object_patch_share``) or annotated pixels. `state_dict` and
    `load_state_dict` save and restore everything, random state included, so a
    resumed run repeats an uninterrupted one.
    """

    def __init__(
        self,
        model: UNet,
        images: Sequence[np.ndarray],
        targets: Sequence[TrainingTarget | np.ndarray],
        weights: Sequence[np.ndarray] | None = None,
        settings: TrainingSettings | None = None,
        rng: int | np.random.Generator | None = None,
        validation: Sequence[tuple[np.ndarray, TrainingTarget | np.ndarray]] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        if weights is None:
            if not all(isinstance(t, TrainingTarget) for t in targets):
                raise ValueError("give weights, or targets made by training_target")
            weights = [t.weights for t in targets]
        if not len(images) == len(targets) == len(weights) or not len(images):
            raise ValueError("give the same number (at least one) of images, targets and weights")
        self.model = model
        self.settings = settings = settings or TrainingSettings()
        self.rng = np.random.default_rng(rng)
        # augmentation draws on the CPU (moved to the device): the same on every device
        self.generator = torch.Generator().manual_seed(int(self.rng.integers(2**62)))
        self.validation = list(validation or [])
        self.images: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []
        self.weights: list[np.ndarray] = []
        # the targets as given, where they are TrainingTarget: their class weights can change
        self.annotations: list[TrainingTarget | None] = []
        # class weights shared by all images, where one rule balanced them (prepare_training)
        self.class_weights: np.ndarray | None = None
        self._centres: list[tuple[np.ndarray, np.ndarray | None]] = []
        for image in images:
            self.images.append(self._normalised(image))
        for index, (target, weight) in enumerate(zip(targets, weights, strict=True)):
            self.targets.append(np.empty(0, dtype=np.int64))
            self.weights.append(np.empty(0, dtype=np.float32))
            self.annotations.append(None)
            self._centres.append((np.empty(0, dtype=np.int64), None))
            self.set_annotation(index, target, weight, check=False)
        self._check_classes()
        self.patch_size = model.valid_input_size(settings.patch_size)
        self.output_size = model.output_size(self.patch_size)
        self.offset = model.output_offset

        self.device = next(model.parameters()).device
        self.mixed_precision = (
            settings.mixed_precision
            if settings.mixed_precision is not None
            else self.device.type == "cuda"
        )
        self.channels_last = (  # 1.16x per step on one CPU thread (benchmarks/README.md)
            settings.channels_last
            if settings.channels_last is not None
            else self.device.type in ("cuda", "cpu")
        )
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        for module in _encoder_modules(model):
            module.requires_grad_(not settings.freeze_encoder)
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(trainable, lr=settings.learning_rate)
        # float16 gradients underflow without loss scaling; bfloat16 need none
        self.scaler = torch.amp.GradScaler(
            self.device.type,
            enabled=self.mixed_precision and autocast_dtype(self.device) == torch.float16,
        )
        self.step = 0
        self.losses: list[float] = []
        self.seconds = 0.0
        self.last_learning_rate = settings.learning_rate  # of the latest step
        self.timing = TrainingClock(settings.budget_seconds, clock)
        self.history: list[tuple[int, ValidationScores]] = []
        self.best_step: int | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.stopped_early = False

    # ---------------------------------------------------------------- data
    def _normalised(self, image: np.ndarray) -> np.ndarray:
        """Return an image as the network sees it: (C, Y, X) float32, as prediction does."""
        image = np.asarray(image)
        channels = self.model.config.in_channels
        expected = 2 if channels == 1 else 3
        if image.ndim != expected or (channels > 1 and image.shape[0] != channels):
            shape = "(Y, X)" if channels == 1 else f"({channels}, Y, X)"
            raise ValueError(
                f"this model takes {channels} channel(s): images must be {shape}, got {image.shape}"
            )
        if image.dtype.kind not in "iufb":
            raise ValueError(f"images must hold numbers, got {image.dtype}")
        pixels = channels_first(image, 0 if channels > 1 else None)
        return normalised(pixels, intensity_range_for(image, self.settings.normalization))

    def set_annotation(
        self,
        index: int,
        target: TrainingTarget | np.ndarray,
        weights: np.ndarray | None = None,
        check: bool = True,
    ) -> None:
        """Replace the annotation of training image `index` (e.g. painted since the start).

        The next patches use it; nothing else about the run changes.
        """
        if weights is None:
            if not isinstance(target, TrainingTarget):
                raise ValueError("give weights, or a target made by training_target")
            weights = target.weights
        classes = class_map(target)
        weights = np.asarray(weights, dtype=np.float32)
        shape = self.images[index].shape[-2:]
        if classes.shape != shape or weights.shape != shape:
            raise ValueError(
                f"image {index + 1} is {shape} but its annotation is {classes.shape}"
                f" and its weights {weights.shape}"
            )
        if classes.max(initial=0) >= self.model.config.n_classes:
            raise ValueError(
                f"the annotations name {int(classes.max()) + 1} classes but the network has "
                f"{self.model.config.n_classes}; start from a network with as many classes"
            )
        self.targets[index], self.weights[index] = classes, weights
        self.annotations[index] = target if isinstance(target, TrainingTarget) else None
        annotated = classes >= 0
        # flat indices of object and (if not everything is) annotated pixels, to centre patches
        self._centres[index] = (
            np.flatnonzero(classes > 0),
            None if annotated.all() else np.flatnonzero(annotated),
        )
        if check:
            self._check_classes()

    def _check_classes(self) -> None:
        present: set[int] = set()
        for classes in self.targets:
            present.update(np.unique(classes[classes >= 0]).tolist())
        if not present:
            raise ValueError("nothing is annotated: paint some pixels first")
        if len(present) < 2:
            only = "background" if present == {0} else f"class {present.pop()}"
            raise ValueError(
                f"the annotations hold only {only}; annotate the background and at least "
                "one object class"
            )

    def sample_patch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return one random (image, target, weights) patch, all ``patch_size`` square.

        The image patch is (C, P, P), the target and weights (P, P).
        """
        rng, size = self.rng, self.patch_size
        index = int(rng.integers(len(self.images)))
        image = self.images[index]
        height, width = image.shape[-2:]
        objects, annotated = self._centres[index]
        if objects.size and rng.random() < self.settings.object_patch_share:
            centre = int(objects[rng.integers(objects.size)])
        elif annotated is not None:
            centre = int(annotated[rng.integers(annotated.size)])
        else:
            centre = int(rng.integers(height * width))
        centre_y, centre_x = divmod(centre, width)
        top = centre_y - size // 2
        left = centre_x - size // 2
        if height >= self.output_size:  # keep the output window inside the image
            top = min(max(top, -self.offset), height - self.output_size - self.offset)
        if width >= self.output_size:
            left = min(max(left, -self.offset), width - self.output_size - self.offset)
        rows = mirror_indices(top, size, height)[:, None]
        cols = mirror_indices(left, size, width)[None, :]
        return (
            np.ascontiguousarray(image[..., rows, cols]),
            self.targets[index][rows, cols],
            self.weights[index][rows, cols],
        )

    def learning_rate(self, step: int | None = None) -> float:
        """Return the learning rate for step `step` (counted from 0; default the next one).

        With a time budget, the cosine follows the share of the budget spent instead.
        """
        base = self.settings.learning_rate
        if not self.settings.cosine_decay:
            return base
        spent = self.timing.budget_fraction
        if spent is None:
            spent = (self.step if step is None else step) / self.settings.steps
        return base * 0.5 * (1.0 + math.cos(math.pi * spent))

    # ------------------------------------------------------------ training
    def batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return one augmented batch on the device: images, classes and weights.

        Images are (B, C, P, P); classes and weights (B, O, O), the output window.
        """
        patches = [self.sample_patch() for _ in range(self.settings.batch_size)]
        images = torch.from_numpy(np.stack([p[0] for p in patches]))  # (B, C, P, P)
        classes = torch.from_numpy(np.stack([p[1] for p in patches]))
        weights = torch.from_numpy(np.stack([p[2] for p in patches]))
        device = self.device
        images, classes, weights = augment_batch(
            images.to(device),
            classes.to(device),
            weights.to(device),
            self.settings.augmentation,
            self.generator,
            output_size=(self.output_size, self.output_size),
        )
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, classes, weights

    def train_step(self) -> float:
        """Train on one batch of random patches; return its loss."""
        images, classes, weights = self.batch()
        learning_rate = self.last_learning_rate = self.learning_rate(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        self.model.train()
        if self.settings.freeze_encoder:
            for module in _encoder_modules(self.model):
                module.eval()  # frozen batch-norm statistics too
        with autocast(self.device, self.mixed_precision):
            logits = self.model(images)  # (B, n_classes, out, out)
        loss = training_loss(logits, classes, weights, self.settings.loss)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        self.losses.append(float(loss.detach()))
        return self.losses[-1]

    def validate(self) -> ValidationScores | None:
        """Return the scores on the validation images, or None without any."""
        if not self.validation:
            return None
        images, targets = zip(*self.validation, strict=True)
        return validation_scores(self.model, images, targets, self.settings.normalization)

    def _remember(self, scores: ValidationScores) -> None:
        """Keep the best weights; stop when validation stops improving."""
        best = dict(self.history).get(self.best_step)
        self.history.append((self.step, scores))
        if best is None or scores.iou > best.iou:
            self.best_step = self.step
            self.best_weights = {
                k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()
            }
            return
        patience = self.settings.patience
        since = sum(1 for step, _ in self.history if step > (self.best_step or 0))
        if patience and since >= patience:
            self.stopped_early = True

    def _finished(self) -> bool:
        if self.settings.minutes is not None:
            return self.timing.out_of_time
        return self.step >= self.settings.steps

    def run(self) -> Generator[TrainingProgress, None, TrainingResult]:
        """Train the remaining steps (or time budget), yielding progress after each step.

        Closing the generator stops between steps; the run can go on later.
        With validation images, the best validated weights are kept at the end.
        The budget counts the time of steps, validation and what the caller adds to
        ``timing`` (previews), none while paused; the step that spends it is the last.
        """
        every, timing, budget = self.settings.validate_every, self.timing, self.settings.minutes
        last = self._finished()
        while not last and not self.stopped_early:
            started = timing.clock()
            loss = self.train_step()
            took = timing.clock() - started
            self.seconds += took
            timing.add_step(took)
            measured, last = None, self._finished()
            if last or (every and self.step % every == 0):
                started = timing.clock()
                measured = self.validate()
                if measured is not None:
                    self._remember(measured)
                timing.add_other(timing.clock() - started)
            total = self.settings.steps if budget is None else timing.expected_steps(self.step)
            yield TrainingProgress(
                self.step, total, loss, self.last_learning_rate, self.seconds, measured,
                self.stopped_early, timing.seconds_left(total - self.step), timing.budget_fraction,
            )  # fmt: skip
        return self.result()

    def result(self) -> TrainingResult:
        """Return the run's result, putting the best validated weights back into the model."""
        validation = None
        if self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)
            validation = dict(self.history)[self.best_step]
        return TrainingResult(
            self.model,
            list(self.losses),
            self.step,
            self.seconds,
            validation,
            self.best_step,
            self.stopped_early,
            list(self.history),
        )

    def preview(
        self, image: np.ndarray, region: tuple[slice, slice] | None = None, index: int = -1
    ) -> Preview:
        """Predict a region of any image with the network as it is now.

        Parameters
        ----------
        image : (Y, X) or (C, Y, X) array
            Raw image (a training image or any other).
        region : (slice, slice), optional
            Rows and columns to show; default the whole image. The image
            around the region is used as context, as in prediction.
        index : int
            Which training image it is, for the caller; -1 for none.

        Returns
        -------
        Preview
            Equal to prediction of the whole image, cut to the region.
        """
        image = np.asarray(image)
        channels = self.model.config.in_channels
        pixels = channels_first(image, 0 if channels > 1 else None)
        low_high = intensity_range_for(image, self.settings.normalization)
        return region_preview(self.model, pixels, region, low_high, self.step, index)

    def preview_training_image(
        self, index: int, region: tuple[slice, slice] | None = None
    ) -> Preview:
        """Predict a region of training image `index` (see `preview`), from its normalised copy."""
        if not 0 <= index < len(self.images):
            raise ValueError(f"there is no training image {index} (there are {len(self.images)})")
        return region_preview(self.model, self.images[index], region, None, self.step, index)

    # ------------------------------------------------------------- save/resume
    def state_dict(self) -> dict[str, Any]:
        """Return everything needed to resume: weights, optimiser, random state, record."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": self.rng.bit_generator.state,
            "generator": self.generator.get_state(),
            "step": self.step,
            "losses": list(self.losses),
            "seconds": self.seconds,
            "spent": self.timing.spent,
            "history": [(step, asdict(scores)) for step, scores in self.history],
            "best_step": self.best_step,
            "best_weights": self.best_weights,
            "stopped_early": self.stopped_early,
            "settings": self.settings.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from a `state_dict`, which must come from a run with the same settings."""
        if state["settings"] != self.settings.to_dict():
            raise ValueError("the saved run used other training settings")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.rng.bit_generator.state = state["rng"]
        self.generator.set_state(state["generator"])
        self.step = int(state["step"])
        self.losses = [float(loss) for loss in state["losses"]]
        self.seconds = float(state["seconds"])
        self.timing.spent = float(state.get("spent", self.seconds))
        self.history = [
            (int(step), ValidationScores(s["iou"], s["dice"], tuple(s["class_iou"])))
            for step, s in state["history"]
        ]
        self.best_step = state["best_step"]
        self.best_weights = state["best_weights"]
        self.stopped_early = bool(state["stopped_early"])


def train(
    model: UNet,
    images: Sequence[np.ndarray],
    targets: Sequence[TrainingTarget | np.ndarray],
    weights: Sequence[np.ndarray] | None = None,
    settings: TrainingSettings | None = None,
    rng: int | np.random.Generator | None = None,
    validation: Sequence[tuple[np.ndarray, TrainingTarget | np.ndarray]] | None = None,
) -> Generator[TrainingProgress, None, TrainingResult]:
    """Train `model` in place, yielding a `TrainingProgress` after every step.

    The parameters are those of `TrainingRun`: ``settings`` says how long (steps or
    minutes), ``validation`` pairs are measured every ``settings.validate_every`` steps
    and after the last. With the same seed (``rng``) and initial weights, two runs of a
    step count on the CPU give the same losses.

    Yields
    ------
    TrainingProgress
        After each step; closing the generator stops training.

    Returns
    -------
    TrainingResult
        Losses, time, and the validation scores of the weights kept.

    See Also
    --------
    TrainingRun : the same, with saving, resuming and live previews.
    """
    run = TrainingRun(model, images, targets, weights, settings, rng, validation)
    return (yield from run.run())
