"""Model files: safetensors weights plus a JSON file saying how to rebuild and use them.

A model called ``nuclei`` is two files side by side: ``nuclei.safetensors`` (the
weights, a format that holds only tensors, so loading never runs code) and
``nuclei.json`` (architecture, class names, intensity normalisation, training
settings, data provenance, metrics, and the checksum of the weights).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ..config import UNetConfig
from ..formats.atomic import write_atomically
from ..images import DEFAULT_NORMALIZATION
from .unet import UNet

FORMAT_NAME = "napari-unet-lab model"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A model file is missing, damaged, or does not fit what it is used for."""


@dataclass
class ModelInfo:
    """What a model file says about its model, besides the weights.

    Attributes
    ----------
    config : UNetConfig
        Architecture.
    class_names : list of str
        One name per output class; class 0 is the background.
    normalization : dict
        How image intensities are mapped before prediction.
    name : str
        Short name shown to the user.
    description : str
        One or two sentences on what the model segments.
    training, provenance, metrics : dict
        Training settings, data the model was trained on, and measured quality.
    """

    config: UNetConfig
    class_names: list[str]
    normalization: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_NORMALIZATION))
    name: str = "model"
    description: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.class_names) != self.config.n_classes:
            raise ModelFileError(
                f"{len(self.class_names)} class names given for {self.config.n_classes} classes"
            )


def model_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """Return the (JSON, safetensors) pair for a path given with either suffix or none."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
    return stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".safetensors")


def save_model(
    path: str | os.PathLike, model: UNet, info: ModelInfo, *, overwrite: bool = False
) -> Path:
    """Save a model as ``<name>.safetensors`` plus ``<name>.json``, each written atomically.

    Parameters
    ----------
    path : str or path-like
        The model's path, with or without a ``.json``/``.safetensors`` suffix.
    model : UNet
        The network; its configuration must match ``info.config``.
    info : ModelInfo
        Everything else the JSON file records.
    overwrite : bool
        Replace existing files; without it existing files are never touched.

    Returns
    -------
    Path
        The JSON file.
    """
    if model.config != info.config:
        raise ValueError("the model's architecture differs from info.config")
    json_path, weights_path = model_paths(path)
    if not overwrite:
        for existing in (json_path, weights_path):
            if existing.exists():
                raise FileExistsError(f"{existing} already exists; choose another name")
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    weights = save(state, metadata={"format": FORMAT_NAME})
    description = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "name": info.name,
        "description": info.description,
        "architecture": info.config.to_dict(),
        "class_names": list(info.class_names),
        "normalization": info.normalization,
        "weights": {"file": weights_path.name, "sha256": hashlib.sha256(weights).hexdigest()},
        "training": info.training,
        "provenance": info.provenance,
        "metrics": info.metrics,
    }
    text = json.dumps(description, indent=2, sort_keys=False) + "\n"
    write_atomically(weights_path, lambda file: file.write(weights), overwrite=overwrite)
    write_atomically(json_path, lambda file: file.write(text.encode()), overwrite=overwrite)
    return json_path


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    """Read what a model's JSON file says, without loading the weights.

    Raises
    ------
    ModelFileError
        If the file is missing, not JSON, or not a model file of this plugin.
    """
    json_path, _ = model_paths(path)
    description = _read_description(json_path)
    try:
        config = UNetConfig.from_dict(description["architecture"])
        return ModelInfo(
            config=config,
            class_names=list(description["class_names"]),
            normalization=dict(description.get("normalization") or DEFAULT_NORMALIZATION),
            name=str(description.get("name", json_path.stem)),
            description=str(description.get("description", "")),
            training=dict(description.get("training") or {}),
            provenance=dict(description.get("provenance") or {}),
            metrics=dict(description.get("metrics") or {}),
        )
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, ModelFileError):
            raise
        raise ModelFileError(
            f"{json_path.name} is not a valid model description: {error}"
        ) from None


def load_model(path: str | os.PathLike) -> tuple[UNet, ModelInfo]:
    """Load a model saved by `save_model`. Never unpickles: weights are safetensors.

    Parameters
    ----------
    path : str or path-like
        The model's ``.json`` or ``.safetensors`` file, or their common stem.

    Returns
    -------
    (UNet, ModelInfo)
        The network, on the CPU in evaluation mode, and its description.

    Raises
    ------
    ModelFileError
        With a message for the user, if either file is missing or damaged, or the
        weights do not fit the architecture.
    """
    json_path, weights_path = model_paths(path)
    info = read_model_info(json_path)
    description = _read_description(json_path)
    weights_name = description.get("weights", {}).get("file", weights_path.name)
    weights_path = json_path.with_name(weights_name)
    if not weights_path.is_file():
        raise ModelFileError(
            f"the weights file {weights_path.name} is missing next to {json_path.name}"
        )
    expected_hash = description.get("weights", {}).get("sha256")
    if expected_hash and _sha256(weights_path) != expected_hash:
        raise ModelFileError(
            f"{weights_path.name} is damaged or was replaced: its checksum does not match "
            f"{json_path.name}"
        )
    try:
        state = load_file(weights_path)
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelFileError(
            f"{weights_path.name} is not a readable safetensors file: {error}"
        ) from None
    model = UNet(info.config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong_shape:
        details = "; ".join(
            f"{what}: {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}"
            for what, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", wrong_shape),
            )
            if keys
        )
        raise ModelFileError(
            f"the weights in {weights_path.name} do not fit its architecture ({details})"
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    return model.eval(), info


def builtin_models() -> dict[str, Path]:
    """Return the models shipped with the plugin, by name, as paths to their JSON files."""
    folder = files("napari_unet_lab") / "models"
    if not folder.is_dir():
        return {}
    found = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            path = Path(str(entry))
            try:
                found[read_model_info(path).name] = path
            except ModelFileError:
                continue  # a damaged built-in model is left out rather than breaking the list
    return found


def check_compatible(info: ModelInfo, in_channels: int | None = None, class_names=None) -> None:
    """Refuse, with a clear message, a model built for other channels or classes.

    Raises
    ------
    ModelFileError
        If the model takes another number of channels or predicts other classes.
    """
    if in_channels is not None and info.config.in_channels != in_channels:
        raise ModelFileError(
            f"the model {info.name!r} was built for {info.config.in_channels} channel(s), "
            f"the image has {in_channels}"
        )
    if class_names is not None and list(class_names) != list(info.class_names):
        raise ModelFileError(
            f"the model {info.name!r} predicts {info.class_names}, not {list(class_names)}"
        )


def _read_description(json_path: Path) -> dict[str, Any]:
    if not json_path.is_file():
        raise ModelFileError(f"no model description {json_path.name} found in {json_path.parent}")
    try:
        description = json.loads(json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"{json_path.name} is not valid JSON: {error}") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{json_path.name} is not a {FORMAT_NAME} file")
    if int(description.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelFileError(
            f"{json_path.name} was written by a newer napari-unet-lab; please update the plugin"
        )
    return description


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
