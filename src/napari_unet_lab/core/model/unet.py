"""The U-Net of Ronneberger et al. (2015), with the geometry tiling needs.

References
----------
.. [1] O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for
       Biomedical Image Segmentation", MICCAI 2015, arXiv:1505.04597.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import nn

from ..config import UNetConfig

# Every 3x3 convolution of a valid-padding U-Net trims one pixel on each side.
_CONV_TRIM = 1


def _exact_cpu_inference(features: torch.Tensor) -> bool:
    return (
        features.device.type == "cpu"
        and features.dtype == torch.float32
        and not torch.is_grad_enabled()
    )


class Conv3x3(nn.Conv2d):
    """A 3x3 convolution whose CPU inference result does not depend on the input size.

    PyTorch picks a CPU convolution algorithm by input size (oneDNN for large
    inputs, another for small ones), and the two round differently. Using oneDNN
    for every size keeps each output pixel's value independent of the tile it
    was computed in, which makes tiled prediction bit-identical.
    """

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if _exact_cpu_inference(features) and torch.backends.mkldnn.is_available():
            return torch.ops.aten.mkldnn_convolution(
                features,
                self.weight,
                self.bias,
                self.padding,
                self.stride,
                self.dilation,
                self.groups,
            )
        return super().forward(features)


class Conv1x1(nn.Conv2d):
    """A 1x1 convolution summing channels in a fixed order during CPU inference.

    Matrix-multiply kernels block the channel sum differently for different
    numbers of pixels; a plain running sum gives the same float32 result for a
    pixel whatever the size of the image around it. In the channels-last copy
    `UNet.for_inference` makes, the sum is oneDNN's instead (`sum_with_onednn`),
    as in `Conv3x3`: there a running sum reads every channel with a stride and
    is 12x slower than oneDNN, whose result is also the same for a pixel
    whatever the image size.
    """

    # Set on the channels-last inference copy; a flag, not the input's layout, decides,
    # because features of a single pixel are both channels-last and contiguous.
    sum_with_onednn = False

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if not _exact_cpu_inference(features):
            return super().forward(features)
        if self.sum_with_onednn and torch.backends.mkldnn.is_available():
            return torch.ops.aten.mkldnn_convolution(
                features, self.weight, self.bias, (0, 0), (1, 1), (1, 1), 1
            )
        weight = self.weight[:, :, 0, 0]  # (out, in)
        total = (
            self.bias.view(1, -1, 1, 1).expand(features.shape[0], -1, *features.shape[-2:]).clone()
        )
        for channel in range(features.shape[1]):
            total = total + features[:, channel : channel + 1] * weight[:, channel].view(
                1, -1, 1, 1
            )
        return total


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by (optional) batch norm and ReLU."""

    def __init__(self, in_channels: int, out_channels: int, padding: int, batch_norm: bool):
        layers: list[nn.Module] = []
        for channels_in in (in_channels, out_channels):
            layers.append(
                Conv3x3(channels_in, out_channels, 3, padding=padding, bias=not batch_norm)
            )
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def center_crop(features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop the last two axes of `features` to `size`, keeping the centre.

    The U-Net crops encoder features before concatenating them with the coarser,
    smaller decoder features (Fig. 1 of [1]_).
    """
    height, width = features.shape[-2:]
    top = (height - size[0]) // 2
    left = (width - size[1]) // 2
    return features[..., top : top + size[0], left : left + size[1]]


@torch.no_grad()
def _fold_batch_norm(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    """Fold an evaluation-mode batch norm into the convolution before it, in place."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
    conv.weight.mul_(scale.view(-1, 1, 1, 1))
    conv.bias = nn.Parameter((bias - norm.running_mean) * scale + norm.bias)


@dataclass(frozen=True)
class InputWindows:
    """For each output pixel along one axis, the input pixels it can depend on.

    Attributes
    ----------
    first, last : np.ndarray
        Index of the first and last input pixel (inclusive) of the theoretical
        receptive field of each output pixel.
    """

    first: np.ndarray
    last: np.ndarray

    @property
    def sizes(self) -> np.ndarray:
        """Receptive-field size of each output pixel."""
        return self.last - self.first + 1


class UNet(nn.Module):
    """A 2D U-Net with named stages.

    Parameters
    ----------
    config : UNetConfig
        Architecture. With ``padding="valid"`` (the paper) the output is smaller
        than the input by ``2 * halo`` pixels and only some input sizes are
        accepted (see `valid_input_size`); with ``padding="same"`` the input size
        must be a multiple of ``2**depth`` and the output has the same size.

    Notes
    -----
    Stages are ``encoders[0..depth-1]``, ``bottleneck``, ``decoders[depth-1..0]``
    (coarse to fine) and ``head`` (the per-pixel class scores, or logits), so
    forward hooks can read every stage by name.
    """

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        self.config = config = config or UNetConfig()
        pad = 1 if config.padding == "same" else 0
        channels = [config.base_channels * 2**level for level in range(config.depth + 1)]
        block_inputs = [config.in_channels, *channels[:-2]]
        self.encoders = nn.ModuleList(
            ConvBlock(c_in, c_out, pad, config.batch_norm)
            for c_in, c_out in zip(block_inputs, channels[:-1], strict=True)
        )
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = ConvBlock(channels[-2], channels[-1], pad, config.batch_norm)
        # upsamplers[level] brings level+1 features up to level, halving the channels
        self.upsamplers = nn.ModuleList(
            nn.ConvTranspose2d(channels[level + 1], channels[level], 2, stride=2)
            for level in range(config.depth)
        )
        self.decoders = nn.ModuleList(
            ConvBlock(2 * channels[level], channels[level], pad, config.batch_norm)
            for level in range(config.depth)
        )
        self.head = Conv1x1(channels[0], config.n_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Return class scores (logits) of shape (B, n_classes, H_out, W_out)."""
        self.check_input_size(image.shape[-2:])
        skips = []
        features = image  # (B, C, H, W)
        for encoder in self.encoders:
            features = encoder(features)
            skips.append(features)
            features = self.pool(features)
        features = self.bottleneck(features)
        for level in reversed(range(self.config.depth)):
            features = self.upsamplers[level](features)
            skip = center_crop(skips[level], features.shape[-2:])
            features = self.decoders[level](torch.cat([skip, features], dim=1))
        return self.head(features)

    def for_inference(self, channels_last: bool = True) -> UNet:
        """Return an evaluation-mode copy with batch norm folded into the convolutions.

        Folding makes inference faster and removes the one per-pixel operation
        whose CPU kernel could round differently at image edges.

        Parameters
        ----------
        channels_last : bool
            Store the weights channels last (the default), so that every stage
            after the first convolution computes channels last, whatever the
            input's layout: 1.3-1.4x faster CPU prediction (oneDNN reorders
            nothing, pooling and up-convolutions read memory in order). The
            scores differ from ``channels_last=False`` by float rounding only
            (about 1e-6) and are just as independent of the image size; every
            user of this copy (prediction, cluster workers, look inside)
            therefore gets the same bits.
        """
        fused = copy.deepcopy(self).eval()
        for block in [*fused.encoders, fused.bottleneck, *fused.decoders]:
            layers = list(block)
            kept: list[nn.Module] = []
            for layer in layers:
                if isinstance(layer, nn.BatchNorm2d):
                    _fold_batch_norm(kept[-1], layer)
                else:
                    kept.append(layer)
            block._modules.clear()
            for index, layer in enumerate(kept):
                block.add_module(str(index), layer)
        if channels_last:
            fused = fused.to(memory_format=torch.channels_last)
            fused.head.sum_with_onednn = True
        return fused

    def with_classes(self, n_classes: int, rng: int | None = None) -> UNet:
        """Return a copy for `n_classes` classes: all weights kept but a new head.

        The new head is initialised as PyTorch initialises a fresh layer, drawn
        from `rng` (see `randomly_initialised`; global random state untouched).
        """
        config = dataclasses.replace(self.config, n_classes=n_classes)
        copy_ = randomly_initialised(config, rng).to(next(self.parameters()).device)
        kept = {k: v for k, v in self.state_dict().items() if not k.startswith("head.")}
        copy_.load_state_dict(kept, strict=False)
        return copy_.train(self.training)

    # ------------------------------------------------------------------ geometry
    @property
    def size_multiple(self) -> int:
        """Tiles must start on this grid to keep the pooling grid aligned."""
        return 2**self.config.depth

    def output_size(self, input_size: int) -> int:
        """Return the output size for an input of `input_size` pixels along one axis.

        Raises
        ------
        ValueError
            If the network cannot take that size; the message names the nearest
            sizes it accepts.
        """
        size = self._output_size_or_none(input_size)
        if size is None:
            below = self.valid_input_size(max(input_size - 1, 1), larger=False)
            above = self.valid_input_size(input_size)
            nearest = f"{below} or {above}" if below else str(above)
            raise ValueError(
                f"this U-Net ({self.config.padding} padding, {self.config.depth} poolings) "
                f"cannot take {input_size} pixels; nearest sizes it accepts: {nearest}"
            )
        return size

    def _output_size_or_none(self, input_size: int) -> int | None:
        trim = 2 * 2 * _CONV_TRIM if self.config.padding == "valid" else 0
        size = input_size
        for _ in range(self.config.depth):
            size -= trim
            if size < 2 or size % 2:
                return None
            size //= 2
        size -= trim
        if size < 1:
            return None
        for _ in range(self.config.depth):
            size = 2 * size - trim
            if size < 1:
                return None
        return size

    def is_valid_input_size(self, input_size: int) -> bool:
        """Return True if the network accepts `input_size` pixels along an axis."""
        return self._output_size_or_none(input_size) is not None

    def valid_input_size(self, size: int, larger: bool = True) -> int:
        """Return the nearest accepted input size at least (or at most) `size`.

        Returns 0 when ``larger=False`` and no accepted size is that small.
        """
        step = 1 if larger else -1
        while size >= 1:
            if self.is_valid_input_size(size):
                return size
            size += step
        return 0

    def check_input_size(self, shape: tuple[int, ...]) -> None:
        """Raise a clear ValueError if an input of spatial `shape` is not accepted."""
        for size in shape:
            self.output_size(int(size))

    @property
    def min_input_size(self) -> int:
        """Smallest input size the network accepts."""
        return self.valid_input_size(1)

    def input_windows(self, input_size: int) -> InputWindows:
        """Return, along one axis, the input pixels each output pixel depends on.

        The windows are worked out exactly by following the layers (convolutions,
        poolings, up-convolutions, crops and concatenations) on index ranges, so
        they hold for every position, including where the pooling grid makes
        neighbouring pixels see slightly different windows.
        """
        return self.stage_windows(input_size)["logits"]

    def stage_windows(self, input_size: int) -> dict[str, InputWindows]:
        """Return, along one axis, the input pixels each pixel of every stage depends on.

        Parameters
        ----------
        input_size : int
            Input size along the axis; one the network accepts.

        Returns
        -------
        dict of str to InputWindows
            Keyed by the names of `stages`, in the same order; each holds one
            window per pixel of that stage's output (after its last ReLU), found
            by following the layers on index ranges as in `input_windows`.
        """
        self.output_size(input_size)  # raises for sizes the network cannot take
        same = self.config.padding == "same"
        first = np.arange(input_size)
        last = first.copy()

        def conv3(first, last):
            for _ in range(2):
                if same:  # zero padding adds no input pixels
                    first = np.concatenate([first[:1], first[:-1]])
                    last = np.concatenate([last[1:], last[-1:]])
                else:
                    first, last = first[:-2], last[2:]
            return first, last

        windows = {}
        skips = []
        for level in range(self.config.depth):
            first, last = conv3(first, last)
            windows[f"encoder {level}"] = InputWindows(first, last)
            skips.append((first, last))
            first, last = first[0::2], last[1::2]
        first, last = conv3(first, last)
        windows["bottleneck"] = InputWindows(first, last)
        for level in reversed(range(self.config.depth)):
            first, last = np.repeat(first, 2), np.repeat(last, 2)
            skip_first, skip_last = skips[level]
            start = (len(skip_first) - len(first)) // 2
            first = np.minimum(first, skip_first[start : start + len(first)])
            last = np.maximum(last, skip_last[start : start + len(last)])
            first, last = conv3(first, last)
            windows[f"decoder {level}"] = InputWindows(first, last)
        windows["logits"] = InputWindows(first, last)  # a 1x1 convolution adds no pixels
        return windows

    @cached_property
    def _interior_windows(self) -> tuple[int, int, int]:
        """Receptive field size, and reach to the left and right, away from borders."""
        probe = self.valid_input_size(2 * self._trim_bound() + 8 * self.size_multiple)
        windows = self.input_windows(probe)
        centre_offset = self.output_offset
        positions = np.arange(len(windows.first)) + centre_offset
        if self.config.padding == "same":  # ignore outputs that touch the zero padding
            interior = slice(self._trim_bound(), len(positions) - self._trim_bound())
        else:
            interior = slice(None)
        first, last = windows.first[interior], windows.last[interior]
        positions = positions[interior]
        return (
            int((last - first + 1).max()),
            int((positions - first).max()),
            int((last - positions).max()),
        )

    def _trim_bound(self) -> int:
        # (input - output) / 2 of the valid-padding network: an upper bound on the reach
        return 2 * (3 * self.size_multiple - 2)

    @property
    def receptive_field(self) -> int:
        """Size in pixels of the theoretical receptive field of one output pixel.

        Where the pooling grid makes it differ between positions, the largest.
        """
        return self._interior_windows[0]

    @property
    def output_offset(self) -> int:
        """Input index of the pixel under output pixel 0 (the valid-padding crop)."""
        if self.config.padding == "same":
            return 0
        probe = self.min_input_size
        return (probe - self.output_size(probe)) // 2

    @property
    def halo(self) -> int:
        """Context in pixels needed on each side of a tile for exact tiled prediction.

        For valid padding this is the crop of the network, ``(input - output) / 2``;
        for same padding it is the reach of the receptive field rounded up to the
        pooling grid, so a tile's kept centre never sees the tile's zero padding.
        """
        if self.config.padding == "valid":
            return self.output_offset
        reach = max(self._interior_windows[1:])
        return -(-reach // self.size_multiple) * self.size_multiple

    def parameter_count(self) -> int:
        """Return the number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def stages(self) -> list[tuple[str, nn.Module]]:
        """Return the named stages in the order data flows through them."""
        named = [(f"encoder {level}", block) for level, block in enumerate(self.encoders)]
        named.append(("bottleneck", self.bottleneck))
        named += [
            (f"decoder {level}", self.decoders[level])
            for level in reversed(range(len(self.decoders)))
        ]
        named.append(("logits", self.head))
        return named


def randomly_initialised(
    config: UNetConfig, generator: torch.Generator | int | None = None
) -> UNet:
    """Return an untrained U-Net, in evaluation mode, with PyTorch's default initialisation.

    Every convolution's weights and biases are drawn uniformly from
    ``±1 / sqrt(fan_in)``, as PyTorch does, but from `generator` (a seed or a
    ``torch.Generator``), so the result is reproducible without touching
    PyTorch's global random state. Batch norm starts as the identity.
    """
    if not isinstance(generator, torch.Generator):
        seed = generator
        generator = torch.Generator()
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(int(seed))
    with torch.device("meta"):  # build without drawing from the global generator
        model = UNet(config)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)
                bound = 1 / math.sqrt(fan_in)
                module.weight.uniform_(-bound, bound, generator=generator)
                if module.bias is not None:
                    module.bias.uniform_(-bound, bound, generator=generator)
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()  # scale 1, shift 0, running mean 0, variance 1
    return model.eval()
