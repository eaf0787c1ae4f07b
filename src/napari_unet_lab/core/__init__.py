"""The GUI-free core: numpy and torch only, never napari or Qt.

What the core offers, by what a user does with it::

    from napari_unet_lab.core import load_model, builtin_models, segment

    model, info = load_model(builtin_models()["nuclei"])
    result = segment(model, info, image)          # probabilities, classes, objects

Each name lives in one subpackage (``model``, ``predict``, ``train``, ``look_inside``,
``formats``) or module (``images``, ``config``, ``progress``, ``device``, ``metrics``) and is
re-exported here. Names load on first use, so importing one submodule (a reader, a writer)
does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# name → the module that is its one home
_HOMES = {
    # settings
    "UNetConfig": "config",
    "AugmentationConfig": "config",
    "TargetConfig": "config",
    "ObjectConfig": "config",
    "TrainingSettings": "train",
    # images: the one channel layout and intensity mapping
    "grayscale": "images",
    "image_channel_axis": "images",
    "check_image": "images",
    "channels_first": "images",
    "intensity_range_for": "images",
    "normalised": "images",
    # long work as generators of progress records
    "Progress": "progress",
    "run_to_end": "progress",
    "select_device": "device",
    "available_devices": "device",
    # the network and its files
    "UNet": "model.unet",
    "randomly_initialised": "model.unet",
    "ModelInfo": "model.files",
    "ModelFileError": "model.files",
    "load_model": "model.files",
    "save_model": "model.files",
    "read_model_info": "model.files",
    "builtin_models": "model.builtin",
    "check_model_destination": "model.files",
    "export_onnx": "model.export",
    "export_torchscript": "model.export",
    "export_bioimageio": "model.export",
    # prediction
    "plan_tiles": "predict.tile_plan",
    "TilePlan": "predict.tile_plan",
    "read_tiles": "predict.tile_plan",
    "write_tiles": "predict.tile_plan",
    "predict_tiled": "predict.tiling",
    "iter_predict_tiled": "predict.tiling",
    "network_runner": "predict.tiling",
    "Segmentation": "predict.segment",
    "segment": "predict.segment",
    "iter_segment": "predict.segment",
    "object_labels": "predict.objects",
    "class_labels": "predict.objects",
    "predict_to_zarr": "predict.larger_than_memory",
    "iter_predict_to_zarr": "predict.larger_than_memory",
    "open_prediction": "predict.larger_than_memory",
    # training
    "AnnotatedImage": "train",
    "prepare_training": "train",
    "train_interactively": "train",
    "NewAnnotation": "train",
    "PreviewRequest": "train",
    "TrainingRun": "train",
    "trained_model_info": "train",
    "training_target": "train",
    "border_weight_map": "train",
    "augment_batch": "train",
    "validation_scores": "train",
    # looking inside
    "feature_maps": "look_inside.feature_maps",
    "input_gradient": "look_inside.receptive_field",
    "iter_effective_receptive_field": "look_inside.receptive_field",
    # files
    "save_labels_tiff": "formats.tiff",
    "load_labels_tiff": "formats.tiff",
    "write_labels_ome_zarr": "formats.ome_zarr",
    "read_ome_zarr": "formats.ome_zarr",
    "write_atomically": "formats.atomic",
    # scores
    "segmentation_scores": "metrics",
    "average_precision": "metrics",
    "pixel_iou": "metrics",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
