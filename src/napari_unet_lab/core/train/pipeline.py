"""From annotated images to a training run: the one pipeline of the GUI, the CLI and scripts.

`prepare_training` turns `AnnotatedImage` items into a `TrainingRun`: it checks
the annotations (in the user's words), that the run fits in memory, balances
the classes as `TargetConfig.class_balance` says, computes border weights, and
gives the network a new head where the annotations name more classes.
`update_annotation` applies annotations painted during a run by the same rule.
With ``resize_to_diameter`` each image of objects is resized so they match the
starting model's object size (`resize`).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..config import TargetConfig
from ..images import converts_to_grayscale, grayscale
from ..model.unet import UNet
from ..predict.scale import typical_object_diameter
from ..progress import Progress
from .resize import (
    ResizedTrainingRun,
    resize_factor,
    resized_annotation,
    resized_target_shape,
    resized_training_image,
    spatial_shape_after,
)
from .run import TrainingRun
from .settings import TrainingSettings
from .targets import (
    UNANNOTATED,
    AnnotationKind,
    TrainingTarget,
    annotation_classes,
    class_balance_weights,
    training_target,
)

BYTES_PER_PROBABILITY = 4  # float32
FALLBACK_MEMORY = 8 * 2**30  # bytes assumed where the machine does not say


@dataclass
class AnnotatedImage:
    """An image and what the user annotated on it.

    Attributes
    ----------
    image : (Y, X) or (C, Y, X) array
        Raw intensities; an RGB(A) image channels first, (3 or 4, Y, X), as
        `images.channels_first` makes napari's RGB layers.
    annotation : (Y, X) int array
        Objects or scribbles, as `kind` says (see `targets.training_target`).
    kind : {"objects", "scribbles"}
        What the annotation is.
    region : (Y, X) bool array, optional
        Where the annotation holds; default everywhere.
    name : str
        How the user calls it, for messages.
    rgb : bool
        The channels of `image` are the colours of an RGB(A) image: a model
        that takes one channel trains on its luminance (`image_for`).
    """

    image: np.ndarray
    annotation: np.ndarray
    kind: AnnotationKind = "objects"
    region: np.ndarray | None = None
    name: str = "image"
    rgb: bool = False

    def image_for(self, in_channels: int) -> np.ndarray:
        """Return the image as a model with `in_channels` takes it.

        An RGB(A) image for a grayscale model becomes its luminance
        (`images.grayscale`, as prediction converts it); any other image is
        returned as it is.
        """
        if converts_to_grayscale(in_channels, self.rgb):
            return grayscale(self.image, channel_axis=0)
        return self.image

    def classes(self) -> tuple[np.ndarray, int]:
        """Return the classes per pixel and their number (`targets.annotation_classes`).

        Cheap: no border weights. Bad input raises a ValueError naming the image.
        """
        self._check_shape()
        try:
            return annotation_classes(self.annotation, self.kind, self.region)
        except ValueError as error:
            raise ValueError(f"{self.name}: {error}") from None

    def target(
        self,
        targets: TargetConfig | None = None,
        class_weights: Sequence[float] | None = None,
    ) -> TrainingTarget:
        """Return the training target, with a message naming the image on bad input.

        Parameters
        ----------
        targets : TargetConfig, optional
            Border weight settings w0 and sigma.
        class_weights : sequence of float, optional
            Class weights to use; default balanced over this image alone.
        """
        targets = targets or TargetConfig()
        self._check_shape()
        try:
            return training_target(
                self.annotation, self.kind, self.region, targets.w0, targets.sigma, class_weights
            )
        except ValueError as error:
            raise ValueError(f"{self.name}: {error}") from None

    def resized(self, factor: float) -> AnnotatedImage:
        """Return a copy resized by `factor`: the image linear, the labels nearest (exact)."""
        if factor == 1:
            return self
        self._check_shape()
        image = resized_training_image(self.image, factor)
        shape = image.shape[-2:]
        region = None if self.region is None else resized_annotation(self.region, shape)
        return replace(
            self, image=image, annotation=resized_annotation(self.annotation, shape), region=region
        )

    def _check_shape(self) -> None:
        image_shape = np.shape(self.image)[-2:]
        if np.shape(self.annotation) != image_shape:
            raise ValueError(
                f"{self.name}: the annotations {np.shape(self.annotation)} do not match the "
                f"image {image_shape}; annotate on a Labels layer of the image's size"
            )


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


# ------------------------------------------------------------------- checks
def _labels(classes: Sequence[int]) -> str:
    labels = [str(c + 1) for c in sorted(classes)]
    if len(labels) == 1:
        return f"label {labels[0]}"
    return f"labels {', '.join(labels[:-1])} and {labels[-1]}"


def check_both_classes(kinds: Sequence[AnnotationKind], class_maps: Sequence[np.ndarray]) -> None:
    """Refuse annotations that do not hold the background and an object class, saying why.

    Parameters
    ----------
    kinds : sequence of {"objects", "scribbles"}
        What each annotation is, for the message.
    class_maps : sequence of (Y, X) int arrays
        Their classes (`targets.annotation_classes`), pooled for the check.

    Raises
    ------
    ValueError
        Naming what the user painted: the scribble labels, or objects.
    """
    present: set[int] = set()
    for classes in class_maps:
        present.update(np.unique(classes[classes != UNANNOTATED]).tolist())
    if 0 in present and len(present) > 1:
        return
    scribbles_only = set(kinds) == {"scribbles"}
    if not present:
        raise ValueError("nothing is annotated: paint some pixels first")
    if present == {0}:
        if scribbles_only:
            raise ValueError(
                "the scribbles hold only label 1 (background); paint at least one class "
                "with label 2 (and 3, 4, … for more classes)"
            )
        raise ValueError(
            "the annotations hold only background, no object; label at least one object"
        )
    if scribbles_only:
        raise ValueError(
            f"the scribbles hold only {_labels(present)} and no background; paint some "
            "background with label 1 too"
        )
    raise ValueError(
        "the annotations hold only objects and no background; annotate some background (0) too"
    )


def memory_budget() -> int:
    """Return the bytes a run's class probabilities may take: half the machine's memory."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (AttributeError, OSError, ValueError):  # no sysconf (Windows)
        return FALLBACK_MEMORY


def check_memory(n_classes: int, images: Sequence[np.ndarray], budget: int | None = None) -> None:
    """Refuse a run whose previews or validations would not fit in memory.

    A preview or validation of a whole image holds ``n_classes`` float32
    probabilities per pixel.

    Parameters
    ----------
    n_classes : int
        Classes of the network to train.
    images : sequence of arrays
        Training and validation images, (Y, X) or (C, Y, X).
    budget : int, optional
        Bytes allowed; default `memory_budget`.

    Raises
    ------
    ValueError
        Saying how much memory would be needed, and what to do instead.
    """
    if not images:
        return
    height, width = max((np.shape(image)[-2:] for image in images), key=lambda s: s[0] * s[1])
    needed = n_classes * height * width * BYTES_PER_PROBABILITY
    budget = memory_budget() if budget is None else budget
    if needed > budget:
        raise ValueError(
            f"{n_classes} classes on an image of {height} × {width} pixels need "
            f"{needed / 2**30:.1f} GiB for the class probabilities of one preview or "
            f"validation, more than the {budget / 2**30:.1f} GiB this machine can spare; "
            "use fewer classes, or crop the image"
        )


# --------------------------------------------------------------- the pipeline
def balanced_class_weights(
    class_maps: Sequence[np.ndarray], n_classes: int, targets: TargetConfig
) -> np.ndarray | None:
    """Return the class weights every image shares, or None to balance each image alone.

    Applies ``targets.class_balance`` (see `TargetConfig`) to the annotated
    pixels of `class_maps`.
    """
    if targets.class_balance == "per_image":
        return None
    return class_balance_weights([c[c != UNANNOTATED] for c in class_maps], n_classes)


def prepare_training(
    model: UNet,
    training: Sequence[AnnotatedImage],
    validation: Sequence[AnnotatedImage] = (),
    settings: TrainingSettings | None = None,
    rng: int | np.random.Generator | None = None,
    targets: TargetConfig | None = None,
    resize_to_diameter: float | None = None,
) -> Generator[Progress, None, TrainingRun]:
    """Turn annotated images into a training run, yielding progress per image.

    Every caller (napari, the command line, scripts) builds its run here, so
    one rule makes targets and class weights for all of them.

    Parameters
    ----------
    model : UNet
        The network; fine-tuned as it is, or, if the annotations name more
        classes than it has, a copy with a new head is (`fine_tuning_copy`).
    training, validation : sequence of AnnotatedImage
        Images to train on, and held-out images to measure on.
    settings : TrainingSettings, optional
        How to train.
    rng : int or numpy.random.Generator, optional
        Source of the run's randomness (`TrainingRun`).
    targets : TargetConfig, optional
        Border weights and the class-weight rule.
    resize_to_diameter : float, optional
        Object diameter, in pixels, to train at: the starting model's
        (``ModelInfo.object_diameter``) when fine-tuning. Each image of
        instance objects is resized so the median diameter of its objects
        matches it (`resize.resize_factor`); scribbles are trained as they
        are. The run (a `resize.ResizedTrainingRun`) shows previews and
        validates on the images as the user has them. None: no resizing.

    Yields
    ------
    Progress
        One record per image prepared.

    Returns
    -------
    TrainingRun
        Ready to `run`; its ``model`` is the network being trained and its
        ``class_weights`` the class weights shared by all images (None when
        each image is balanced alone).

    Raises
    ------
    ValueError
        With a message for the user: no image, annotations that do not fit
        their image or hold a single class, or a run too large for memory.
    """
    if not training:
        raise ValueError("choose at least one image with annotations to train on")
    targets = targets or TargetConfig()
    total = len(training) + len(validation)
    yield Progress(0, total, "reading annotations")
    if resize_to_diameter is not None:
        for item in (*training, *validation):
            item.classes()  # refuse bad annotations in plain words before measuring them
    factors = [resize_factor(i.annotation, i.kind, resize_to_diameter) for i in training]
    validation_factors = [
        resize_factor(i.annotation, i.kind, resize_to_diameter) for i in validation
    ]
    user_shapes = [np.shape(item.image)[-2:] for item in training]
    annotation_diameter = typical_object_diameter(
        [item.annotation for item in training if item.kind == "objects"]
    )
    training = [item.resized(factor) for item, factor in zip(training, factors, strict=True)]
    classes = [item.classes() for item in training]
    in_channels = model.config.in_channels
    checks = [(item.image_for(in_channels), item.classes()[0]) for item in validation]
    check_both_classes([item.kind for item in training], [c for c, _ in classes])
    n_classes = max(n for _, n in classes)
    check_memory(
        max(n_classes, model.config.n_classes),
        [item.image for item in (*training, *validation)]
        + [
            np.empty((0, *spatial_shape_after(i.image, f)))
            for i, f in zip(validation, validation_factors, strict=True)
        ],
    )
    class_weights = balanced_class_weights([c for c, _ in classes], n_classes, targets)
    prepared = []
    for done, item in enumerate(training):
        yield Progress(done, total, f"preparing annotations of {item.name}")
        prepared.append(item.target(targets, class_weights))
    if n_classes > model.config.n_classes:
        model = fine_tuning_copy(model, n_classes, rng=0)
    yield Progress(total, total, "starting")
    images = [item.image_for(in_channels) for item in training]
    if resize_to_diameter is None or all(f == 1 for f in (*factors, *validation_factors)):
        run = TrainingRun(model, images, prepared, None, settings, rng, checks)
    else:
        run = ResizedTrainingRun(
            model, images, prepared, None, settings, rng, checks,
            factors=factors,
            user_shapes=user_shapes,
            validation_factors=validation_factors,
            trained_diameter=resize_to_diameter,
            annotation_diameter=annotation_diameter,
        )  # fmt: skip
    run.class_weights = class_weights
    return run


def update_annotation(
    run: TrainingRun, index: int, item: AnnotatedImage, targets: TargetConfig | None = None
) -> None:
    """Use new annotations of training image `index` from the next step on.

    The class-weight rule of `prepare_training` holds: with
    ``class_balance="all_images"`` the shared class weights are recounted and
    every image's weights follow (border terms kept). Nothing changes if the
    new annotations are refused.

    In a run on resized images (`resize.ResizedTrainingRun`) the new
    annotations are resized as the image was at the start.

    Raises
    ------
    ValueError
        With a message for the user: annotations that do not fit the image or
        the network, or that leave a single class.
    """
    targets = targets or TargetConfig()
    if 0 <= index < len(run.targets) and resized_target_shape(run, index) is not None:
        item = item.resized(run.factors[index])  # type: ignore[attr-defined]
    classes, n_classes = item.classes()
    if not 0 <= index < len(run.targets) or classes.shape != run.targets[index].shape:
        raise ValueError(f"{item.name}: these annotations belong to no image being trained on")
    if n_classes > run.model.config.n_classes:
        raise ValueError(
            f"{item.name}: the annotations name {n_classes} classes but the network being "
            f"trained has {run.model.config.n_classes}; start a new training for more classes"
        )
    class_maps = [classes if i == index else c for i, c in enumerate(run.targets)]
    check_both_classes([item.kind], class_maps)
    if run.class_weights is None or targets.class_balance == "per_image":
        run.set_annotation(index, item.target(targets))
        return
    shared = class_balance_weights(
        [c[c != UNANNOTATED] for c in class_maps], run.model.config.n_classes
    )
    target = item.target(targets, shared)
    others = [
        (i, annotation.with_class_weights(shared))
        for i, annotation in enumerate(run.annotations)
        if i != index and annotation is not None
    ]
    for i, other in others:
        run.set_annotation(i, other, check=False)
    run.set_annotation(index, target)
    run.class_weights = shared
