"""What a trained model's file says about how it was made: the one place it is written."""

from __future__ import annotations

import platform
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..config import TargetConfig
from ..model.files import ModelInfo
from ..predict.scale import typical_object_diameter
from .pipeline import AnnotatedImage
from .resize import ResizedTrainingRun
from .run import TrainingRun


def default_class_names(n_classes: int, base: ModelInfo | None = None) -> list[str]:
    """Return the base model's class names if it has as many classes, else generic ones.

    One kind of object is an "object" (what instance masks train); several are numbered.

    Examples
    --------
    >>> default_class_names(2)
    ['background', 'object']
    >>> default_class_names(3)
    ['background', 'class 1', 'class 2']
    """
    if base is not None and len(base.class_names) == n_classes:
        return list(base.class_names)
    if n_classes == 2:
        return ["background", "object"]
    return ["background", *(f"class {c}" for c in range(1, n_classes))]


def trained_model_info(
    run: TrainingRun,
    name: str,
    *,
    seed: int | None,
    images: Sequence[str],
    validation_images: Sequence[str] = (),
    targets: TargetConfig | None = None,
    class_names: Sequence[str] | None = None,
    base: ModelInfo | None = None,
    started_from: str | None = None,
    description: str | None = None,
    training: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    annotations: Sequence[AnnotatedImage] | None = None,
    pixel_size: float | None = None,
) -> ModelInfo:
    """Describe the network a run trained, for its model file.

    Parameters
    ----------
    run : TrainingRun
        The run, trained as far as it went.
    name : str
        Model name shown to the user.
    seed : int or None
        Seed the run (and a new network's weights) came from.
    images, validation_images : sequence of str
        What the user calls the training and validation images.
    targets : TargetConfig, optional
        Border weights and class-weight rule the targets were made with.
    class_names : sequence of str, optional
        One per class; default `default_class_names`.
    base : ModelInfo, optional
        The model training started from; None for a new network.
    started_from : str, optional
        How the user calls the starting point; default the base model's name.
    description : str, optional
        One or two sentences; default says what it was trained on.
    training, provenance, metrics : mapping, optional
        Further entries for the caller to record (the command, a data set's
        licence, scores measured after training).
    annotations : sequence of AnnotatedImage, optional
        The training annotations, to measure the typical object diameter on
        (`training_object_diameter`); default the run's targets.
    pixel_size : float, optional
        Pixel size of the training images (their layer scale), when known.

    Returns
    -------
    ModelInfo
        ``training`` holds every training setting, w0 and sigma, the
        class-weight rule and weights, the seed and steps done;
        ``provenance`` the images used and the starting model; ``metrics``
        every validation; ``object_diameter`` the typical object size of the
        annotations (the base model's if they hold no objects). A run on
        resized images (`resize.ResizedTrainingRun`) learnt objects of the
        diameter it resized to: that is ``object_diameter``, and
        ``training["object_size"]`` records it with the diameter of the
        annotations as painted and each image's resize factor.
    """
    targets = targets or TargetConfig()
    model = run.model
    n_classes = model.config.n_classes
    names = list(class_names) if class_names is not None else default_class_names(n_classes, base)
    if started_from is None:
        started_from = "a new network" if base is None else base.name
    shared = None if run.class_weights is None else np.round(run.class_weights, 6).tolist()
    record: dict[str, Any] = {
        "settings": run.settings.to_dict(),
        "targets": targets.to_dict(),
        "class_weights": shared if shared is not None else "balanced per image",
        "seed": seed,
        "steps_planned": run.settings.steps,
        "steps_done": run.step,
        "stopped_early": run.stopped_early,
        "final_loss": run.losses[-1] if run.losses else None,
        "training_seconds": round(run.seconds, 1),
        "patch_input_size": run.patch_size,
        "patch_output_size": run.output_size,
        "device": str(run.device),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        **(training or {}),
    }
    diameter = training_object_diameter(run, annotations)
    if isinstance(run, ResizedTrainingRun):
        annotated = diameter if annotations is not None else run.annotation_diameter
        record["object_size"] = {
            "trained_at_object_diameter": round(run.trained_diameter, 2),
            "annotation_object_diameter": None if annotated is None else round(annotated, 2),
            "image_resize_factors": [round(f, 4) for f in run.factors],
            "how": "each image of objects resized so the median diameter of its annotated "
            "objects matched the starting model's; previews and validation on the images "
            "as annotated",
        }
        diameter = run.trained_diameter  # what the network saw
    origin = {
        "started_from": started_from,
        "base_model": None if base is None else base.provenance,
        "images": list(images),
        "validation_images": list(validation_images),
        **(provenance or {}),
    }
    measured: dict[str, Any] = {
        "validation": [
            {"step": step, "iou": round(s.iou, 4), "dice": round(s.dice, 4)}
            for step, s in run.history
        ],
        "best_step": run.best_step,
        **(metrics or {}),
    }
    if description is None:
        description = f"U-Net trained on {len(images)} image(s), starting from {started_from}."
    return ModelInfo(
        config=model.config,
        class_names=names,
        normalization=dict(run.settings.normalization),
        name=name,
        description=description,
        training=record,
        provenance=origin,
        metrics=measured,
        object_diameter=diameter or (None if base is None else base.object_diameter),
        pixel_size=None if pixel_size is None else float(pixel_size),
    )


def training_object_diameter(
    run: TrainingRun, annotations: Sequence[AnnotatedImage] | None = None
) -> float | None:
    """Return the median equivalent diameter of the training objects, in pixels, rounded.

    Instance annotations are measured object by object; scribbles, and the
    run's targets when no annotations are given, by connected regions of each
    object class (touching objects of instance targets are apart there, by the
    gap the network learns to leave). None without objects.
    """
    if annotations is None:
        diameter = typical_object_diameter(run.targets, kind="classes")
    else:
        diameter = typical_object_diameter(
            [a.annotation if a.kind == "objects" else a.classes()[0] for a in annotations],
            kind=["objects" if a.kind == "objects" else "classes" for a in annotations],
        )
    return None if diameter is None else round(diameter, 2)
