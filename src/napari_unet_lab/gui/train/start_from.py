"""Where training starts: a built-in or saved model, a new network, or the one trained here."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ...core.config import TargetConfig, UNetConfig
from ...core.images import RGB_CONVERTED_NOTE, converts_to_grayscale
from ...core.model.files import ModelInfo
from ...core.model.unet import UNet, randomly_initialised
from ...core.train import AnnotatedImage, TrainingRun, TrainingSettings
from ..model_chooser import ModelChooser
from .pair import Pair

NEW_NETWORK = "new network (random weights)"
CONTINUE = "the network trained here (go on)"


@dataclass(frozen=True)
class Start:
    """What one press of Start asked for: the network to train, and how to train it."""

    model: UNet  # the network to train (a copy where it goes on from another)
    base: ModelInfo | None  # the model file it came from, if any
    origin: str  # where it came from, in words ("nuclei", "a new network")
    pairs: list[Pair]  # the pairs trained on, in the run's order
    settings: TrainingSettings
    targets: TargetConfig
    seed: int
    validation: list[Pair] = field(default_factory=list)  # the pair held out, if any


def start_from_chooser(trained_here: Callable[[], bool]) -> ModelChooser:
    """Return the "Start from" chooser.

    It offers the network trained here (once there is one), the built-in
    models, a new network, and a model file.
    """
    return ModelChooser(
        "Start from",
        first=lambda: [(CONTINUE, CONTINUE)] if trained_here() else [],
        last=[(NEW_NETWORK, NEW_NETWORK)],
    )


def channels_of(image) -> int:
    """Return the channels of a (Y, X) or (C, Y, X) training image."""
    return 1 if image.ndim == 2 else image.shape[0]


def conversion_note(model: UNet, items: Sequence[AnnotatedImage]) -> str:
    """Say, for the user, if a grayscale `model` will train on RGB images' luminance; else ""."""
    in_channels = model.config.in_channels
    return (
        RGB_CONVERTED_NOTE if any(converts_to_grayscale(in_channels, i.rgb) for i in items) else ""
    )


def _takes(in_channels: int, channels: int, rgb: bool) -> bool:
    """Whether a network of `in_channels` takes the images (an RGB one as its luminance)."""
    return in_channels == channels or converts_to_grayscale(in_channels, rgb)


def starting_model(
    chooser: ModelChooser,
    channels: int,
    trained: tuple[TrainingRun, Start] | None,
    seed: int,
    rgb: bool = False,
) -> tuple[UNet, ModelInfo | None, str]:
    """Return the network to train, the model file it came from, and its origin in words.

    Parameters
    ----------
    chooser : ModelChooser
        The "Start from" choice.
    channels : int
        Channels of the training images.
    trained : (TrainingRun, Start) or None
        The network trained here and how it was started, to go on from.
    seed : int
        Draws the weights of a new network.
    rgb : bool
        The images are RGB(A): a grayscale model takes them too, as their
        luminance; a new network takes their colours.

    Raises
    ------
    ValueError
        With a message for the user: no model file chosen, an unusable file,
        or a network built for other channels.
    """
    choice = chooser.choice.value
    if choice == CONTINUE and trained is not None:
        run, start = trained
        model = copy.deepcopy(run.model)  # the trained network stays as it is
        if not _takes(model.config.in_channels, channels, rgb):
            raise ValueError(
                f"the network trained here takes {model.config.in_channels} channel(s) but "
                f"the images have {channels}"
            )
        origin = start.origin if "go on" in start.origin else f"{start.origin} (go on)"
        return model, start.base, origin
    if choice == NEW_NETWORK:
        config = UNetConfig.new_network(in_channels=channels)
        return randomly_initialised(config, seed), None, "a new network"
    model, info = chooser.load()
    if not _takes(info.config.in_channels, channels, rgb):
        raise ValueError(
            f"{info.name!r} takes {info.config.in_channels} channel(s) but the images have "
            f"{channels}; start from a new network instead"
        )
    return model, info, info.name
