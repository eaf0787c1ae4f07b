"""Training a U-Net on annotated images, as a generator of small progress records.

The loss is the pixel-wise cross-entropy weighted by a border weight map, on
random patches of the size the network accepts, as in Ronneberger et al. (2015).

References
----------
.. [1] O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for
       Biomedical Image Segmentation", MICCAI 2015, arXiv:1505.04597.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .model import UNet
from .normalize import DEFAULT_NORMALIZATION, intensity_range_for
from .tiling import mirror_indices, predict_tiled


@dataclass(frozen=True)
class TrainingSettings:
    """How a network is trained."""

    steps: int = 1500  # optimiser steps, one batch of patches each
    batch_size: int = 4  # patches per step
    patch_size: int = 252  # input patch edge, rounded up to a size the network accepts
    learning_rate: float = 1e-3  # Adam step size at the start
    cosine_decay: bool = True  # lower the learning rate to 0 along a half cosine
    object_patch_share: float = 0.8  # share of patches centred on an object pixel
    flips_and_rotations: bool = True  # random mirror flips and 90 degree rotations
    validate_every: int = 0  # steps between validations; 0: only after the last step
    normalization: dict[str, Any] = field(
        default_factory=lambda: dict(DEFAULT_NORMALIZATION)
    )  # intensity mapping; the model file stores the same, for prediction

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be at least 1")
        if not 0 <= self.object_patch_share <= 1:
            raise ValueError("object_patch_share must be between 0 and 1")

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-ready dictionary."""
        return asdict(self)


@dataclass(frozen=True)
class TrainingProgress:
    """One training step done.

    Attributes
    ----------
    step, total_steps : int
        Steps finished, and planned.
    loss : float
        Weighted cross-entropy of this step's batch.
    learning_rate : float
        Step size used for this step.
    seconds : float
        Training time so far, validation excluded.
    validation_iou : float or None
        Object pixel IoU on the validation images, where measured at this step.
    """

    step: int
    total_steps: int
    loss: float
    learning_rate: float
    seconds: float
    validation_iou: float | None = None

    @property
    def fraction(self) -> float:
        """Share of the training done, from 0 to 1."""
        return self.step / self.total_steps

    @property
    def message(self) -> str:
        """A short line for a status bar."""
        text = f"step {self.step} of {self.total_steps}, loss {self.loss:.4f}"
        if self.validation_iou is not None:
            text += f", validation IoU {self.validation_iou:.3f}"
        return text


@dataclass
class TrainingResult:
    """What a finished training run returns.

    Attributes
    ----------
    model : UNet
        The trained network (the one passed in, trained in place).
    losses : list of float
        Loss of every step.
    steps : int
        Steps done.
    seconds : float
        Training time, validation excluded.
    validation_iou : float or None
        Object pixel IoU on the validation images after the last step.
    """

    model: UNet
    losses: list[float]
    steps: int
    seconds: float
    validation_iou: float | None = None


def predict_foreground(
    model: UNet,
    image: np.ndarray,
    normalization: dict[str, Any] | None = None,
    tile_size: int | None = 512,
) -> np.ndarray:
    """Return the pixels a two-class model assigns to its object class (class 1).

    Parameters
    ----------
    model : UNet
        The network; it is not changed.
    image : (Y, X) array
        The image, with raw intensities.
    normalization : dict, optional
        The model's intensity normalisation (default: percentiles 1 and 99.8).
    tile_size : int or None
        Input tile edge for `predict_tiled`.

    Returns
    -------
    (Y, X) bool array
    """
    device = next(model.parameters()).device
    probabilities = predict_tiled(
        model,
        image,
        tile_size=tile_size,
        device=device,
        intensity_range=intensity_range_for(image, normalization),
    )
    return probabilities.argmax(axis=0) == 1


def foreground_iou(
    model: UNet,
    images: Sequence[np.ndarray],
    foregrounds: Sequence[np.ndarray],
    normalization: dict[str, Any] | None = None,
) -> float:
    """Return the object pixel IoU over a set of images, pooled over all pixels.

    Parameters
    ----------
    model : UNet
        A two-class network.
    images : sequence of (Y, X) arrays
        Raw images.
    foregrounds : sequence of (Y, X) bool arrays
        True object pixels, e.g. ``labels > 0``.
    normalization : dict, optional
        The model's intensity normalisation.

    Returns
    -------
    float
        Intersection over union of predicted and true object pixels, summed
        over the images; 1 if both are empty.
    """
    intersection = union = 0
    for image, truth in zip(images, foregrounds, strict=True):
        predicted = predict_foreground(model, image, normalization)
        truth = np.asarray(truth, dtype=bool)
        intersection += np.count_nonzero(predicted & truth)
        union += np.count_nonzero(predicted | truth)
    return intersection / union if union else 1.0


class TrainingRun:
    """A training run that can be stepped through, saved and resumed.

    Parameters
    ----------
    model : UNet
        The network to train, in place, on the device it is on.
    images : sequence of (Y, X) arrays
        Raw training images; each is normalised once with ``settings.normalization``.
    targets : sequence of (Y, X) int arrays
        Class of each pixel (see `semantic_target_from_instances`).
    weights : sequence of (Y, X) float arrays
        Loss weight of each pixel (see `border_weight_map`).
    settings : TrainingSettings, optional
        How to train.
    rng : int or numpy.random.Generator, optional
        Source of all randomness of the run: patch positions and flips. The
        model's initial weights are the caller's.
    validation : sequence of (image, foreground) pairs, optional
        Raw images and their true object masks, to measure `foreground_iou`.

    Notes
    -----
    Patches have the input size the network accepts; their targets and weights
    are the output window, ``model.output_offset`` pixels in from each side.
    Where a patch reaches past the image, the image is mirrored, as in
    prediction. `state_dict` and `load_state_dict` save and restore everything,
    random state included, so a resumed run repeats an uninterrupted one.
    """

    def __init__(
        self,
        model: UNet,
        images: Sequence[np.ndarray],
        targets: Sequence[np.ndarray],
        weights: Sequence[np.ndarray],
        settings: TrainingSettings | None = None,
        rng: int | np.random.Generator | None = None,
        validation: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    ):
        if not len(images) == len(targets) == len(weights) or not len(images):
            raise ValueError("give the same number (at least one) of images, targets and weights")
        self.model = model
        self.settings = settings = settings or TrainingSettings()
        self.rng = np.random.default_rng(rng)
        self.validation = list(validation or [])
        self.images, self.targets, self.weights = [], [], []
        for image, target, weight in zip(images, targets, weights, strict=True):
            image, target, weight = np.asarray(image), np.asarray(target), np.asarray(weight)
            if image.ndim != 2 or image.shape != target.shape or image.shape != weight.shape:
                raise ValueError("each image, target and weight map must be 2D, of one shape")
            low, high = intensity_range_for(image, settings.normalization)
            scale = 1.0 / (high - low) if high != low else 1.0
            # the same float32 arithmetic as prediction
            self.images.append((image.astype(np.float32) - np.float32(low)) * np.float32(scale))
            self.targets.append(target.astype(np.int64))
            self.weights.append(weight.astype(np.float32))
        # flat indices of object pixels, to centre patches on objects
        self.object_pixels = [np.flatnonzero(target > 0) for target in self.targets]
        self.patch_size = model.valid_input_size(settings.patch_size)
        self.output_size = model.output_size(self.patch_size)
        self.offset = model.output_offset
        self.optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
        self.step = 0
        self.losses: list[float] = []
        self.seconds = 0.0

    # ----------------------------------------------------------------- patches
    def sample_patch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return one random (image, target, weights) patch, augmented.

        The image patch is ``patch_size`` square; target and weights are the
        ``output_size`` square at its centre.
        """
        rng, out = self.rng, self.output_size
        index = int(rng.integers(len(self.images)))
        image = self.images[index]
        height, width = image.shape
        objects = self.object_pixels[index]
        if objects.size and rng.random() < self.settings.object_patch_share:
            centre_y, centre_x = divmod(int(objects[rng.integers(objects.size)]), width)
        else:
            centre_y, centre_x = int(rng.integers(height)), int(rng.integers(width))
        top = min(max(centre_y - out // 2, 0), max(height - out, 0))
        left = min(max(centre_x - out // 2, 0), max(width - out, 0))
        rows_in = mirror_indices(top - self.offset, self.patch_size, height)[:, None]
        cols_in = mirror_indices(left - self.offset, self.patch_size, width)[None, :]
        rows_out = mirror_indices(top, out, height)[:, None]
        cols_out = mirror_indices(left, out, width)[None, :]
        patches = [
            image[rows_in, cols_in],
            self.targets[index][rows_out, cols_out],
            self.weights[index][rows_out, cols_out],
        ]
        if self.settings.flips_and_rotations:
            # input and output windows share a centre, so they turn together
            turns, flip = int(rng.integers(4)), bool(rng.random() < 0.5)
            patches = [np.rot90(patch, turns) for patch in patches]
            if flip:
                patches = [patch[:, ::-1] for patch in patches]
        image_patch, target_patch, weight_patch = (np.ascontiguousarray(p) for p in patches)
        return image_patch, target_patch, weight_patch

    def learning_rate(self, step: int) -> float:
        """Return the learning rate for step `step` (counted from 0)."""
        base = self.settings.learning_rate
        if not self.settings.cosine_decay:
            return base
        return base * 0.5 * (1.0 + math.cos(math.pi * step / self.settings.steps))

    # ---------------------------------------------------------------- training
    def train_step(self) -> float:
        """Train on one batch of random patches; return its loss."""
        device = next(self.model.parameters()).device
        patches = [self.sample_patch() for _ in range(self.settings.batch_size)]
        images = torch.from_numpy(np.stack([p[0] for p in patches])[:, None]).to(device)
        targets = torch.from_numpy(np.stack([p[1] for p in patches])).to(device)
        weights = torch.from_numpy(np.stack([p[2] for p in patches])).to(device)
        learning_rate = self.learning_rate(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        self.model.train()
        logits = self.model(images)  # (B, n_classes, out, out)
        per_pixel = F.cross_entropy(logits, targets, reduction="none")
        loss = (per_pixel * weights).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        self.losses.append(float(loss.detach()))
        return self.losses[-1]

    def validate(self) -> float | None:
        """Return the object pixel IoU on the validation images, or None without any."""
        if not self.validation:
            return None
        images, foregrounds = zip(*self.validation, strict=True)
        return foreground_iou(self.model, images, foregrounds, self.settings.normalization)

    def run(self) -> Generator[TrainingProgress, None, TrainingResult]:
        """Train the remaining steps, yielding progress after each.

        Closing the generator stops between steps; the run can go on later.
        """
        every = self.settings.validate_every
        validation_iou = None
        while self.step < self.settings.steps:
            started = time.perf_counter()
            learning_rate = self.learning_rate(self.step)
            loss = self.train_step()
            self.seconds += time.perf_counter() - started
            measured = None
            if self.step == self.settings.steps or (every and self.step % every == 0):
                measured = validation_iou = self.validate()
            yield TrainingProgress(
                self.step, self.settings.steps, loss, learning_rate, self.seconds, measured
            )
        return TrainingResult(
            self.model, list(self.losses), self.step, self.seconds, validation_iou
        )

    # ------------------------------------------------------------- save/resume
    def state_dict(self) -> dict[str, Any]:
        """Return everything needed to resume: weights, optimiser, random state, record."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": self.rng.bit_generator.state,
            "step": self.step,
            "losses": list(self.losses),
            "seconds": self.seconds,
            "settings": self.settings.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from a `state_dict`, which must come from a run with the same settings."""
        if state["settings"] != self.settings.to_dict():
            raise ValueError("the saved run used other training settings")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["rng"]
        self.step = int(state["step"])
        self.losses = [float(loss) for loss in state["losses"]]
        self.seconds = float(state["seconds"])


def train(
    model: UNet,
    images: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    weights: Sequence[np.ndarray],
    settings: TrainingSettings | None = None,
    rng: int | np.random.Generator | None = None,
    validation: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
) -> Generator[TrainingProgress, None, TrainingResult]:
    """Train `model` in place, yielding a `TrainingProgress` after every step.

    Parameters
    ----------
    model : UNet
        The network; trained on the device it is on.
    images : sequence of (Y, X) arrays
        Raw training images, normalised as ``settings.normalization`` says.
    targets : sequence of (Y, X) int arrays
        Class of each pixel, e.g. from `semantic_target_from_instances`.
    weights : sequence of (Y, X) float arrays
        Loss weight of each pixel, e.g. from `border_weight_map`.
    settings : TrainingSettings, optional
        Steps, batch and patch size, learning rate, augmentation.
    rng : int or numpy.random.Generator, optional
        Seed or generator for patch positions and flips; with the same seed and
        initial weights, two runs on the CPU give the same losses.
    validation : sequence of (image, foreground) pairs, optional
        Measured with `foreground_iou` every ``settings.validate_every`` steps
        and after the last.

    Yields
    ------
    TrainingProgress
        After each step; closing the generator stops training.

    Returns
    -------
    TrainingResult
        Losses, time, and the final validation IoU.

    See Also
    --------
    TrainingRun : the same, with saving and resuming.
    """
    run = TrainingRun(model, images, targets, weights, settings, rng, validation)
    return (yield from run.run())
