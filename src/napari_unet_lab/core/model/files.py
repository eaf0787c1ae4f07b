"""Model files: safetensors weights plus a JSON file saying how to rebuild and use them.

A model called ``nuclei`` is two files side by side: ``nuclei.safetensors`` (the
weights, a format that holds only tensors, so loading never runs code) and
``nuclei.json`` (architecture, class names, intensity normalisation, training
settings, data provenance, metrics, and the checksum of the weights).

Both are saved whole or not at all, the JSON last: a weights file without its
JSON is what an interrupted save leaves, and never blocks the name. A JSON file
is checked against `schema.description_problem` before anything is built from
it, and every unusable model file is refused with one `ModelFileError`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ..config import UNetConfig
from ..formats.atomic import write_all_or_none
from ..images import DEFAULT_NORMALIZATION
from .schema import (
    FORMAT_NAME,
    FORMAT_VERSION,
    WEIGHTS_SUFFIX,
    description_problem,
    is_plain_weights_file_name,
)
from .unet import UNet

LARGEST_DESCRIPTION = 64 * 2**20  # bytes; a model's JSON file is a few kilobytes


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
    object_diameter : float or None
        Median equivalent diameter of the training objects, in pixels; None: unknown.
    pixel_size : float or None
        Pixel size of the training images (their layer scale), when known.
    shown_larger : float
        Objects resized for their size are shown this much larger (measured; 1 if unknown).
    """

    config: UNetConfig
    class_names: list[str]
    normalization: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_NORMALIZATION))
    name: str = "model"
    description: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    object_diameter: float | None = None
    pixel_size: float | None = None
    shown_larger: float = 1.0

    def __post_init__(self) -> None:
        if len(self.class_names) != self.config.n_classes:
            raise ModelFileError(
                f"{len(self.class_names)} class names given for {self.config.n_classes} classes"
            )


def model_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """Return the (JSON, safetensors) pair for a path given with either suffix or none.

    Raises
    ------
    ModelFileError
        If the path has no file name (``""``, ``"."``, a root folder).
    """
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".json", WEIGHTS_SUFFIX) else path
    if stem.name in ("", ".", ".."):
        raise ModelFileError(f"a model needs a file name; {str(path)!r} has none")
    return stem.with_name(stem.name + ".json"), stem.with_name(stem.name + WEIGHTS_SUFFIX)


def check_model_destination(
    path: str | os.PathLike, *, overwrite: bool = False
) -> tuple[Path, Path]:
    """Check that a model can be saved at `path`, before spending time on training it.

    An interrupted save leaves a half model (weights without their JSON, or the
    reverse): it does not block the name, and saving replaces it. Files of other
    programs are never replaced without `overwrite`.

    Parameters
    ----------
    path : str or path-like
        Where the model goes, with or without a ``.json``/``.safetensors`` suffix.
    overwrite : bool
        Whether an existing model may be replaced.

    Returns
    -------
    (Path, Path)
        The JSON and weights files `save_model` writes.

    Raises
    ------
    IsADirectoryError
        If `path` (or one of the two files) is a folder.
    FileNotFoundError
        If the folder to save in does not exist.
    FileExistsError
        If a model, or another program's file, already has that name and
        `overwrite` is false.
    """
    if Path(path).is_dir():
        raise IsADirectoryError(
            f"cannot save the model as {path}: that is a folder; give the model a name in it, "
            f"such as {Path(path) / 'model'}"
        )
    json_path, weights_path = model_paths(path)
    for target in (json_path, weights_path):
        if target.is_dir():
            raise IsADirectoryError(f"cannot save the model: {target} is a folder")
    if not json_path.parent.is_dir():
        raise FileNotFoundError(
            f"cannot save the model: the folder {json_path.parent} does not exist"
        )
    if overwrite:
        return json_path, weights_path
    if _is_complete_model(json_path):
        raise FileExistsError(f"a model already exists at {json_path}; choose another name")
    for target, ours in ((json_path, _is_our_description), (weights_path, _is_our_weights)):
        if target.exists() and not ours(target):
            raise FileExistsError(
                f"the file {target} already exists and is not part of a napari-unet-lab model; "
                "choose another name"
            )
    return json_path, weights_path


def save_model(
    path: str | os.PathLike, model: UNet, info: ModelInfo, *, overwrite: bool = False
) -> Path:
    """Save a model as ``<name>.safetensors`` plus ``<name>.json``: both whole, or nothing.

    Parameters
    ----------
    path : str or path-like
        The model's path, with or without a ``.json``/``.safetensors`` suffix.
    model : UNet
        The network; its configuration must match ``info.config``.
    info : ModelInfo
        Everything else the JSON file records.
    overwrite : bool
        Replace an existing model; without it no model file is ever touched
        (the half a failed save left behind is replaced, see `check_model_destination`).

    Returns
    -------
    Path
        The JSON file.

    Raises
    ------
    IsADirectoryError, FileNotFoundError, FileExistsError
        See `check_model_destination`; nothing is written.
    ModelFileError
        If `info` holds something a model file cannot (the file would not load).
    OSError
        With a plain message, if writing fails (a full disk, say); the old
        files, if any, are left as they were.
    """
    if model.config != info.config:
        raise ValueError("the model's architecture differs from info.config")
    json_path, weights_path = check_model_destination(path, overwrite=overwrite)
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
        "object_size": dict(
            diameter=info.object_diameter,
            pixel_size=info.pixel_size,
            shown_larger=info.shown_larger,
        ),
    }
    try:
        text = json.dumps(description, indent=2, sort_keys=False) + "\n"
    except (TypeError, ValueError) as error:  # a value JSON cannot hold, or a cycle
        raise ModelFileError(f"the model cannot be saved: {error}") from None
    problem = description_problem(json.loads(text))
    if problem is not None:  # the file would be refused when loaded: do not write it
        raise ModelFileError(f"the model cannot be saved: {problem}")
    replace = overwrite or json_path.exists() or weights_path.exists()  # a half model too
    try:
        write_all_or_none(
            [
                (weights_path, lambda file: file.write(weights)),
                (json_path, lambda file: file.write(text.encode())),  # last: says it is complete
            ],
            overwrite=replace,
        )
    except FileExistsError:
        raise FileExistsError(
            f"a file called {json_path.name} or {weights_path.name} appeared in "
            f"{json_path.parent} while saving; nothing was saved"
        ) from None
    except OSError as error:
        raise OSError(
            f"could not save the model {json_path.name} in {json_path.parent}: "
            f"{error.strerror or error}; nothing was saved"
        ) from error
    return json_path


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    """Read what a model's JSON file says, without loading the weights.

    Raises
    ------
    ModelFileError
        If the file is missing, not JSON, or not a usable model description.
    """
    json_path, _ = model_paths(path)
    return _model_info(json_path, _read_description(json_path))


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
    json_path, _ = model_paths(path)
    description = _read_description(json_path)
    info = _model_info(json_path, description)
    weights_path = _weights_path(json_path, description)
    state = _read_weights(weights_path, json_path, description.get("weights", {}).get("sha256"))
    with torch.device("meta"):  # shapes only: nothing allocated for weights that do not fit
        expected = UNet(info.config).state_dict()
    _check_weights_fit(state, expected, weights_path)
    model = UNet(info.config)
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    return model.eval(), info


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
    """Return the JSON of a model file, checked by `description_problem`."""
    if json_path.is_dir():
        raise ModelFileError(f"the model file {json_path} is a folder, not a model description")
    if not json_path.is_file():
        raise ModelFileError(f"no model description {json_path.name} found in {json_path.parent}")
    try:
        if json_path.stat().st_size > LARGEST_DESCRIPTION:
            raise ModelFileError(
                f"the model file {json_path.name} is far too large for a model description"
            )
        description = json.loads(json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ModelFileError(
            f"the model file {json_path.name} is not valid JSON: {error}"
        ) from None
    except OSError as error:
        raise ModelFileError(
            f"the model file {json_path.name} cannot be read: {error.strerror or error}"
        ) from None
    problem = description_problem(description)
    if problem is not None:
        raise ModelFileError(
            f"the model file {json_path.name} is not a valid model description: {problem}"
        )
    return description


def _model_info(json_path: Path, description: dict[str, Any]) -> ModelInfo:
    try:
        return ModelInfo(
            config=UNetConfig.from_dict(description["architecture"]),
            class_names=list(description["class_names"]),
            normalization=dict(description.get("normalization") or DEFAULT_NORMALIZATION),
            name=description.get("name", json_path.stem),
            description=description.get("description", ""),
            training=dict(description.get("training") or {}),
            provenance=dict(description.get("provenance") or {}),
            metrics=dict(description.get("metrics") or {}),
            object_diameter=(description.get("object_size") or {}).get("diameter"),
            pixel_size=(description.get("object_size") or {}).get("pixel_size"),
            shown_larger=(description.get("object_size") or {}).get("shown_larger") or 1.0,
        )
    except ValueError as error:  # anything the schema let through that the model refuses
        if isinstance(error, ModelFileError):
            raise
        raise ModelFileError(
            f"the model file {json_path.name} is not a valid model description: {error}"
        ) from None


def _weights_path(json_path: Path, description: dict[str, Any]) -> Path:
    # The schema allows only a plain file name: the weights always lie beside the JSON.
    name = description.get("weights", {}).get("file") or json_path.stem + WEIGHTS_SUFFIX
    return json_path.with_name(name)


def _read_weights(
    weights_path: Path, json_path: Path, expected_hash: str | None
) -> dict[str, torch.Tensor]:
    if not weights_path.is_file():
        raise ModelFileError(
            f"the weights file {weights_path.name} is missing next to {json_path.name}"
        )
    try:
        if expected_hash and _sha256(weights_path) != expected_hash:
            raise ModelFileError(
                f"the weights file {weights_path.name} is damaged or was replaced: its checksum "
                f"does not match {json_path.name}"
            )
        # safetensors parses a JSON header and copies tensors: no code in the file ever runs
        return load_file(weights_path)
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as error:
        if isinstance(error, ModelFileError):
            raise
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise ModelFileError(
            f"the weights file {weights_path.name} is not a readable safetensors file: {reason}"
        ) from None


def _check_weights_fit(
    state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], weights_path: Path
) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    common = [key for key in expected if key in state]
    wrong_shape = [key for key in common if state[key].shape != expected[key].shape]
    wrong_kind = [  # integers where numbers with fractions belong, or the reverse
        key
        for key in common
        if state[key].dtype.is_floating_point != expected[key].dtype.is_floating_point
        or state[key].dtype.is_complex
        or state[key].dtype == torch.bool
    ]
    if missing or unexpected or wrong_shape or wrong_kind:
        details = "; ".join(
            f"{what}: {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}"
            for what, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", wrong_shape),
                ("wrong number type", wrong_kind),
            )
            if keys
        )
        raise ModelFileError(
            f"the weights in {weights_path.name} do not fit its architecture ({details})"
        )
    not_finite = [
        key
        for key, value in state.items()
        if value.dtype.is_floating_point and not bool(torch.isfinite(value).all())
    ]
    if not_finite:
        raise ModelFileError(
            f"the weights in {weights_path.name} are damaged: {', '.join(not_finite[:3])} "
            "hold values that are not numbers (NaN or infinite)"
        )


def _is_complete_model(json_path: Path) -> bool:
    """Tell whether `json_path` is one of our descriptions and its weights file exists."""
    description = _description_or_none(json_path)
    if description is None:
        return False
    weights = description.get("weights")
    name = weights.get("file") if isinstance(weights, dict) else None
    if not is_plain_weights_file_name(name):
        name = json_path.stem + WEIGHTS_SUFFIX
    return json_path.with_name(name).is_file()


def _is_our_description(json_path: Path) -> bool:
    return _description_or_none(json_path) is not None


def _description_or_none(json_path: Path) -> dict[str, Any] | None:
    try:
        if not json_path.is_file() or json_path.stat().st_size > LARGEST_DESCRIPTION:
            return None
        description = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    ours = isinstance(description, dict) and description.get("format") == FORMAT_NAME
    return description if ours else None


def _is_our_weights(weights_path: Path) -> bool:
    """Tell whether a safetensors file says it was written by `save_model` (header only)."""
    try:
        with weights_path.open("rb") as file:
            size = int.from_bytes(file.read(8), "little")
            if not 2 <= size <= 2**20:  # our headers are a few kilobytes
                return False
            header = json.loads(file.read(size).decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return isinstance(metadata, dict) and metadata.get("format") == FORMAT_NAME


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
