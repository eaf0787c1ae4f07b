"""Training a U-Net on annotated images, as a generator of small progress records.

The loss is the pixel-wise cross-entropy weighted by a border weight map, as in
Ronneberger et al. (2015), a soft Dice or Jaccard loss, or cross-entropy plus
Dice, on random patches of the size the network accepts. Patches are deformed
elastically on the training device (`core.augment`). Pixels that nobody
annotated (`targets.UNANNOTATED`) count for nothing.

References
----------
.. [1] O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for
       Biomedical Image Segmentation", MICCAI 2015, arXiv:1505.04597.
.. [2] F. Milletari, N. Navab, S.-A. Ahmadi, "V-Net: Fully Convolutional Neural
       Networks for Volumetric Medical Image Segmentation", 3DV 2016 (soft Dice).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..config import AugmentationConfig, _from_dict
from ..device import autocast, autocast_dtype
from ..images import DEFAULT_NORMALIZATION, intensity_range_for
from ..model.unet import UNet
from ..predict.tiling import mirror_indices, predict_tiled
from ..progress import Progress
from .augment import augment_batch
from .targets import AnnotationKind, TrainingTarget, training_target

LossName = Literal["cross_entropy", "dice", "jaccard", "cross_entropy+dice"]
LOSSES = ("cross_entropy", "dice", "jaccard", "cross_entropy+dice")


@dataclass(frozen=True)
class TrainingSettings:
    """How a network is trained."""

    steps: int = 1500  # optimiser steps, one batch of patches each
    batch_size: int = 4  # patches per step
    patch_size: int = 252  # input patch edge, rounded up to a size the network accepts
    learning_rate: float = 1e-3  # Adam step size at the start
    cosine_decay: bool = True  # lower the learning rate to 0 along a half cosine
    # measured choice, see benchmarks/README.md ("Which loss"): cross-entropy with border
    # weights separates touching objects, Dice adds overlap directly
    loss: LossName = "cross_entropy+dice"
    object_patch_share: float = 0.8  # share of patches centred on an object pixel
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    validate_every: int = 0  # steps between validations; 0: only after the last step
    patience: int = 0  # validations without improvement before stopping early; 0: never
    freeze_encoder: bool = False  # train only the decoder and head (fine-tuning)
    mixed_precision: bool | None = None  # None: on for CUDA, off elsewhere
    channels_last: bool | None = None  # memory layout for convolutions; None: on for CUDA
    normalization: dict[str, Any] = field(
        default_factory=lambda: dict(DEFAULT_NORMALIZATION)
    )  # intensity mapping; the model file stores the same, for prediction

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be at least 1")
        if not 0 <= self.object_patch_share <= 1:
            raise ValueError("object_patch_share must be between 0 and 1")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.validate_every < 0 or self.patience < 0:
            raise ValueError("validate_every and patience must not be negative")
        if isinstance(self.augmentation, dict):  # as read back from JSON
            object.__setattr__(self, "augmentation", AugmentationConfig(**self.augmentation))

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-ready dictionary."""
        return asdict(self)

    @classmethod
    def from_dict(cls, settings: dict[str, Any]) -> TrainingSettings:
        """Build from a dictionary, refusing unknown keys with a clear message."""
        settings = dict(settings)
        if isinstance(settings.get("augmentation"), dict):
            settings["augmentation"] = AugmentationConfig.from_dict(settings["augmentation"])
        return _from_dict(cls, settings, "training")


# ----------------------------------------------------------------------- losses
def weighted_cross_entropy(
    logits: torch.Tensor, classes: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Return the weighted cross-entropy per annotated pixel, eq. 1 of [1]_.

    Parameters
    ----------
    logits : (B, K, H, W) tensor
    classes : (B, H, W) int64 tensor
        Class per pixel; negative values (unannotated) are ignored.
    weights : (B, H, W) tensor
        Weight per pixel.
    """
    annotated = classes >= 0
    per_pixel = F.cross_entropy(logits.float(), classes.clamp_min(0), reduction="none")
    return (per_pixel * weights * annotated).sum() / annotated.sum().clamp_min(1)


def soft_overlap_loss(
    logits: torch.Tensor, classes: torch.Tensor, kind: Literal["dice", "jaccard"] = "dice"
) -> torch.Tensor:
    """Return 1 − the soft Dice (or Jaccard) overlap of the object classes, [2]_.

    Probabilities and one-hot targets are summed over the annotated pixels of
    the whole batch, per object class (class 0, the background, is left out),
    and the overlaps averaged over the classes. A smoothing term of 1 keeps
    patches without objects from dividing by zero.

    Examples
    --------
    >>> classes = torch.tensor([[[0, 1], [1, -1]]])
    >>> sure = torch.tensor([[[[9.0, -9], [-9, 0]], [[-9.0, 9], [9, 0]]]])
    >>> round(float(soft_overlap_loss(sure, classes)), 3)
    0.0
    """
    n_classes = logits.shape[1]
    annotated = (classes >= 0).unsqueeze(1)
    probabilities = logits.float().softmax(dim=1) * annotated
    one_hot = F.one_hot(classes.clamp_min(0), n_classes).permute(0, 3, 1, 2) * annotated
    dims = (0, 2, 3)
    intersection = (probabilities * one_hot).sum(dims)[1:]
    total = probabilities.sum(dims)[1:] + one_hot.sum(dims)[1:]
    if kind == "dice":
        overlap = (2 * intersection + 1) / (total + 1)
    else:
        overlap = (intersection + 1) / (total - intersection + 1)
    return 1 - overlap.mean()


def training_loss(
    logits: torch.Tensor, classes: torch.Tensor, weights: torch.Tensor, loss: LossName
) -> torch.Tensor:
    """Return the loss named by `loss` (see `TrainingSettings.loss`)."""
    if loss == "cross_entropy":
        return weighted_cross_entropy(logits, classes, weights)
    if loss in ("dice", "jaccard"):
        return soft_overlap_loss(logits, classes, loss)
    return weighted_cross_entropy(logits, classes, weights) + soft_overlap_loss(logits, classes)


# ------------------------------------------------------------------- validation
@dataclass(frozen=True)
class ValidationScores:
    """Overlap of prediction and annotation on held-out images.

    Attributes
    ----------
    iou, dice : float
        Intersection over union and Dice coefficient, per object class over
        the annotated pixels of all images, averaged over the object classes.
    class_iou : tuple of float
        IoU of each object class (classes 1, 2, …).
    """

    iou: float
    dice: float
    class_iou: tuple[float, ...]


def _channel_axis(model: UNet) -> int | None:
    return 0 if model.config.in_channels > 1 else None


def predict_probabilities(
    model: UNet,
    image: np.ndarray,
    normalization: dict[str, Any] | None = None,
    tile_size: int | None = 512,
) -> np.ndarray:
    """Return the class probabilities of an image, (K, Y, X), with the model as it is now.

    Parameters
    ----------
    model : UNet
        The network; it is not changed.
    image : (Y, X) or (C, Y, X) array
        The image, with raw intensities.
    normalization : dict, optional
        The model's intensity normalisation (default: percentiles 1 and 99.8).
    tile_size : int or None
        Input tile edge for `predict_tiled`.
    """
    return predict_tiled(
        model,
        image,
        tile_size=tile_size,
        device=next(model.parameters()).device,
        channel_axis=_channel_axis(model),
        intensity_range=intensity_range_for(image, normalization),
    )


def predict_foreground(
    model: UNet,
    image: np.ndarray,
    normalization: dict[str, Any] | None = None,
    tile_size: int | None = 512,
) -> np.ndarray:
    """Return the pixels a model assigns to its first object class (class 1), (Y, X) bool."""
    return predict_probabilities(model, image, normalization, tile_size).argmax(axis=0) == 1


def _as_classes(target: TrainingTarget | np.ndarray) -> np.ndarray:
    if isinstance(target, TrainingTarget):
        return target.classes
    return np.asarray(target).astype(np.int64)  # a boolean foreground becomes classes 0/1


def validation_scores(
    model: UNet,
    images: Sequence[np.ndarray],
    targets: Sequence[TrainingTarget | np.ndarray],
    normalization: dict[str, Any] | None = None,
) -> ValidationScores:
    """Measure IoU and Dice of a model's prediction against annotations.

    Parameters
    ----------
    model : UNet
        The network.
    images : sequence of (Y, X) or (C, Y, X) arrays
        Raw images.
    targets : sequence of TrainingTarget or (Y, X) arrays
        Classes per pixel (negative: not annotated, ignored), or boolean object masks.
    normalization : dict, optional
        The model's intensity normalisation.

    Returns
    -------
    ValidationScores
        Pooled over all images; a class absent from both prediction and
        annotation scores 1.
    """
    n_classes = model.config.n_classes
    intersection = np.zeros(n_classes, dtype=np.int64)
    union = np.zeros(n_classes, dtype=np.int64)
    for image, target in zip(images, targets, strict=True):
        truth = _as_classes(target)
        annotated = truth >= 0
        predicted = predict_probabilities(model, image, normalization).argmax(axis=0)
        predicted, truth = predicted[annotated], truth[annotated]
        for c in range(1, n_classes):
            is_predicted, is_true = predicted == c, truth == c
            intersection[c] += np.count_nonzero(is_predicted & is_true)
            union[c] += np.count_nonzero(is_predicted | is_true)
    iou = [intersection[c] / union[c] if union[c] else 1.0 for c in range(1, n_classes)]
    dice = [
        2 * intersection[c] / (intersection[c] + union[c]) if union[c] else 1.0
        for c in range(1, n_classes)
    ]
    return ValidationScores(float(np.mean(iou)), float(np.mean(dice)), tuple(map(float, iou)))


def foreground_iou(
    model: UNet,
    images: Sequence[np.ndarray],
    foregrounds: Sequence[np.ndarray],
    normalization: dict[str, Any] | None = None,
) -> float:
    """Return the object pixel IoU of a two-class model over some images, pooled.

    `foregrounds` are the true object masks, e.g. ``labels > 0``.
    """
    return validation_scores(model, images, foregrounds, normalization).iou


# ------------------------------------------------------------------ live preview
@dataclass
class Preview:
    """What the network makes of a region of an image, mid-training.

    Attributes
    ----------
    step : int
        Training step the preview shows.
    index : int
        Which training image (or -1 for another image).
    region : (slice, slice)
        Where in the image the preview lies.
    classes : (Y, X) uint8 array
        Most likely class.
    uncertainty : (Y, X) float32 array
        Entropy of the class probabilities, divided by its maximum log(K):
        0 sure, 1 no idea. High values show where annotating helps most.
    """

    step: int
    index: int
    region: tuple[slice, slice]
    classes: np.ndarray
    uncertainty: np.ndarray


def uncertainty_map(probabilities: np.ndarray) -> np.ndarray:
    """Return the normalised entropy of class probabilities (K, ...) → (...), in [0, 1].

    Examples
    --------
    >>> uncertainty_map(np.array([[0.5, 1.0], [0.5, 0.0]])).round(3)
    array([1., 0.], dtype=float32)
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probabilities > 0, probabilities * np.log(probabilities), 0.0)
    entropy = -terms.sum(axis=0) / math.log(probabilities.shape[0])
    return (entropy + 0.0).astype(np.float32)  # + 0.0 turns -0.0 into 0.0


# ---------------------------------------------------------------------- progress
@dataclass(frozen=True)
class TrainingProgress:
    """One training step done.

    Attributes
    ----------
    step, total_steps : int
        Steps finished, and planned.
    loss : float
        Loss of this step's batch.
    learning_rate : float
        Step size used for this step.
    seconds : float
        Training time so far, validation excluded.
    validation : ValidationScores or None
        Scores on the validation images, where measured at this step.
    stopped_early : bool
        Validation stopped improving; this is the last step.
    """

    step: int
    total_steps: int
    loss: float
    learning_rate: float
    seconds: float
    validation: ValidationScores | None = None
    stopped_early: bool = False

    @property
    def fraction(self) -> float:
        """Share of the training done, from 0 to 1."""
        return self.step / self.total_steps

    @property
    def done(self) -> int:
        """Steps done (as `Progress.done`)."""
        return self.step

    @property
    def total(self) -> int:
        """Steps planned (as `Progress.total`)."""
        return self.total_steps

    @property
    def validation_iou(self) -> float | None:
        """Validation IoU, where measured at this step."""
        return None if self.validation is None else self.validation.iou

    @property
    def eta_seconds(self) -> float:
        """Training time left at the pace so far, validation excluded."""
        return self.seconds / max(self.step, 1) * (self.total_steps - self.step)

    @property
    def message(self) -> str:
        """A short line for a status bar."""
        text = f"step {self.step} of {self.total_steps}, loss {self.loss:.4f}"
        if self.validation is not None:
            text += f", validation IoU {self.validation.iou:.3f}"
        if self.stopped_early:
            text += ", stopped: validation no longer improves"
        return text


@dataclass
class TrainingResult:
    """What a finished training run returns.

    Attributes
    ----------
    model : UNet
        The trained network (the one passed in, trained in place); with
        validation, the weights of the best validation.
    losses : list of float
        Loss of every step.
    steps : int
        Steps done.
    seconds : float
        Training time, validation excluded.
    validation : ValidationScores or None
        Scores of the weights returned.
    best_step : int or None
        Step whose weights are returned, if validated.
    stopped_early : bool
        Training ended before `steps` because validation stopped improving.
    history : list of (int, ValidationScores)
        Every validation, by step.
    """

    model: UNet
    losses: list[float]
    steps: int
    seconds: float
    validation: ValidationScores | None = None
    best_step: int | None = None
    stopped_early: bool = False
    history: list[tuple[int, ValidationScores]] = field(default_factory=list)

    @property
    def validation_iou(self) -> float | None:
        """Validation IoU of the weights returned."""
        return None if self.validation is None else self.validation.iou


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
        Raw training images (C = the model's input channels); each is
        normalised once with ``settings.normalization``.
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
        self._centres: list[tuple[np.ndarray, np.ndarray | None]] = []
        for image in images:
            self.images.append(self._normalised(image))
        for index, (target, weight) in enumerate(zip(targets, weights, strict=True)):
            self.targets.append(np.empty(0, dtype=np.int64))
            self.weights.append(np.empty(0, dtype=np.float32))
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
        self.channels_last = (
            settings.channels_last
            if settings.channels_last is not None
            else self.device.type == "cuda"
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
        self.history: list[tuple[int, ValidationScores]] = []
        self.best_step: int | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.stopped_early = False

    # ---------------------------------------------------------------- data
    def _normalised(self, image: np.ndarray) -> np.ndarray:
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
        if image.dtype.kind == "f" and not np.all(np.isfinite(image)):
            raise ValueError("a training image holds NaN or infinite values")
        low, high = intensity_range_for(image, self.settings.normalization)
        scale = 1.0 / (high - low) if high != low else 1.0
        # the same float32 arithmetic as prediction
        return (image.astype(np.float32) - np.float32(low)) * np.float32(scale)

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
        classes = _as_classes(target)
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

        The image patch is (P, P), or (C, P, P) for several channels.
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

    def learning_rate(self, step: int) -> float:
        """Return the learning rate for step `step` (counted from 0)."""
        base = self.settings.learning_rate
        if not self.settings.cosine_decay:
            return base
        return base * 0.5 * (1.0 + math.cos(math.pi * step / self.settings.steps))

    # ------------------------------------------------------------ training
    def batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return one augmented batch on the device: images, classes and weights.

        Images are (B, C, P, P); classes and weights (B, O, O), the output window.
        """
        patches = [self.sample_patch() for _ in range(self.settings.batch_size)]
        images = torch.from_numpy(np.stack([p[0] for p in patches]))
        if images.ndim == 3:
            images = images[:, None]
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
        learning_rate = self.learning_rate(self.step)
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

    def run(self) -> Generator[TrainingProgress, None, TrainingResult]:
        """Train the remaining steps, yielding progress after each.

        Closing the generator stops between steps; the run can go on later.
        With validation images, the best validated weights are kept at the end.
        """
        every = self.settings.validate_every
        while self.step < self.settings.steps and not self.stopped_early:
            started = time.perf_counter()
            learning_rate = self.learning_rate(self.step)
            loss = self.train_step()
            self.seconds += time.perf_counter() - started
            measured = None
            if self.step == self.settings.steps or (every and self.step % every == 0):
                measured = self.validate()
                if measured is not None:
                    self._remember(measured)
            yield TrainingProgress(
                self.step,
                self.settings.steps,
                loss,
                learning_rate,
                self.seconds,
                measured,
                self.stopped_early,
            )
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
        """Predict a region of an image with the network as it is now.

        Parameters
        ----------
        image : (Y, X) or (C, Y, X) array
            Raw image (a training image or any other).
        region : (slice, slice), optional
            Rows and columns to show; default the whole image. The image
            around the region is used as context, as in prediction.
        index : int
            Which training image it is, for the caller; -1 for none.
        """
        image = np.asarray(image)
        height, width = image.shape[-2:]
        if region is None:
            region = (slice(0, height), slice(0, width))
        rows = slice(*region[0].indices(height)[:2])
        cols = slice(*region[1].indices(width)[:2])
        if rows.stop <= rows.start or cols.stop <= cols.start:
            raise ValueError("the preview region is empty")
        # context reaching past every input window, starting on the pooling grid of the
        # whole image, so the preview equals a prediction of the whole image there
        reach, grid = self.model.receptive_field, self.model.size_multiple
        context = (
            slice(max((rows.start - reach) // grid * grid, 0), min(rows.stop + reach, height)),
            slice(max((cols.start - reach) // grid * grid, 0), min(cols.stop + reach, width)),
        )
        low, high = intensity_range_for(image, self.settings.normalization)
        crop = image[(..., *context)]
        was_training = self.model.training
        probabilities = predict_tiled(
            self.model,
            crop,
            device=self.device,
            channel_axis=_channel_axis(self.model),
            intensity_range=(low, high),
        )
        self.model.train(was_training)
        inner = (
            slice(rows.start - context[0].start, rows.stop - context[0].start),
            slice(cols.start - context[1].start, cols.stop - context[1].start),
        )
        probabilities = probabilities[(slice(None), *inner)]
        return Preview(
            self.step,
            index,
            (rows, cols),
            probabilities.argmax(axis=0).astype(np.uint8),
            uncertainty_map(probabilities),
        )

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

    Parameters
    ----------
    model : UNet
        The network; trained on the device it is on.
    images : sequence of (Y, X) or (C, Y, X) arrays
        Raw training images, normalised as ``settings.normalization`` says.
    targets : sequence of TrainingTarget or (Y, X) int arrays
        Classes per pixel, negative where not annotated, e.g. from
        `targets.training_target`.
    weights : sequence of (Y, X) float arrays, optional
        Loss weight of each pixel, e.g. from `border_weight_map`; default the
        targets' own.
    settings : TrainingSettings, optional
        Steps, batch and patch size, learning rate, loss, augmentation.
    rng : int or numpy.random.Generator, optional
        Seed or generator for patch positions and augmentation; with the same
        seed and initial weights, two runs on the CPU give the same losses.
    validation : sequence of (image, target) pairs, optional
        Measured with `validation_scores` every ``settings.validate_every``
        steps and after the last.

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


def fine_tuning_copy(model: UNet, n_classes: int, rng: int | None = None) -> UNet:
    """Return a copy of a trained network to fine-tune for `n_classes` classes.

    The copy keeps every weight; if the class count differs, its last layer
    (the head) is replaced by a freshly initialised one, so a two-class base
    model can learn, say, three classes from scribbles.
    """
    tuned = copy.deepcopy(model)
    if n_classes == model.config.n_classes:
        return tuned
    return tuned.with_classes(n_classes, rng)


@dataclass
class AnnotatedImage:
    """An image and what the user annotated on it.

    Attributes
    ----------
    image : (Y, X) or (C, Y, X) array
        Raw intensities.
    annotation : (Y, X) int array
        Objects or scribbles, as `kind` says (see `targets.training_target`).
    kind : {"objects", "scribbles"}
        What the annotation is.
    region : (Y, X) bool array, optional
        Where the annotation holds; default everywhere.
    name : str
        How the user calls it, for messages.
    """

    image: np.ndarray
    annotation: np.ndarray
    kind: AnnotationKind = "objects"
    region: np.ndarray | None = None
    name: str = "image"

    def target(self, w0: float = 10.0, sigma: float = 5.0) -> TrainingTarget:
        """Return the training target, with a message naming the image on bad input."""
        image_shape = np.shape(self.image)[-2:]
        if np.shape(self.annotation) != image_shape:
            raise ValueError(
                f"{self.name}: the annotations {np.shape(self.annotation)} do not match the "
                f"image {image_shape}; annotate on a Labels layer of the image's size"
            )
        try:
            return training_target(self.annotation, self.kind, self.region, w0, sigma)
        except ValueError as error:
            raise ValueError(f"{self.name}: {error}") from None


def prepare_training(
    model: UNet,
    training: Sequence[AnnotatedImage],
    validation: Sequence[AnnotatedImage] = (),
    settings: TrainingSettings | None = None,
    rng: int | np.random.Generator | None = None,
    w0: float = 10.0,
    sigma: float = 5.0,
) -> Generator[Progress, None, TrainingRun]:
    """Turn annotated images into a training run, yielding progress per image.

    The network is fine-tuned as it is, or, if the annotations name more
    classes than it has, a copy with a new head is (`fine_tuning_copy`).

    Returns
    -------
    TrainingRun
        Ready to `run`; its ``model`` is the network being trained.
    """
    if not training:
        raise ValueError("choose at least one image with annotations to train on")
    total = len(training) + len(validation)
    targets = []
    for done, item in enumerate(training):
        yield Progress(done, total, f"preparing annotations of {item.name}")
        targets.append(item.target(w0, sigma))
    checks = []
    for done, item in enumerate(validation, start=len(training)):
        yield Progress(done, total, f"preparing annotations of {item.name}")
        checks.append((item.image, item.target(w0, sigma)))
    n_classes = max(target.n_classes for target in targets)
    if n_classes > model.config.n_classes:
        model = fine_tuning_copy(model, n_classes, rng=0)
    yield Progress(total, total, "starting")
    images = [item.image for item in training]
    return TrainingRun(model, images, targets, None, settings, rng, checks)
