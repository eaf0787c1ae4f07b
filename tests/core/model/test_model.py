"""The U-Net builds as configured and states its own geometry correctly."""

import numpy as np
import pytest
import torch

from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.model.unet import UNet


def test_paper_and_light_parameter_counts():
    # The paper's network (64 channels, 4 poolings, 2 classes) has 31,030,658 weights.
    assert UNet(UNetConfig.paper()).parameter_count() == 31_030_658
    light = UNet(UNetConfig(batch_norm=False)).parameter_count()
    assert light == 1_925_058
    # Batch norm adds a scale and shift per channel and drops the convolution biases.
    assert UNet(UNetConfig()).parameter_count() == 1_926_466


@pytest.mark.parametrize("in_channels", [1, 3, 5])
def test_channels_and_classes(in_channels):
    model = UNet(UNetConfig(in_channels=in_channels, n_classes=4, base_channels=4, depth=2))
    size = model.valid_input_size(60)
    out = model(torch.zeros(2, in_channels, size, size))
    assert out.shape == (2, 4, model.output_size(size), model.output_size(size))


def test_paper_geometry():
    # Fig. 1 of the paper: a 572x572 tile gives a 388x388 output.
    model = UNet(UNetConfig.paper())
    assert model.output_size(572) == 388
    assert model.halo == (572 - 388) // 2
    with pytest.raises(ValueError, match="nearest sizes it accepts: 556 or 572"):
        model.output_size(570)


def test_valid_input_sizes_are_exactly_those_the_network_runs_on():
    model = UNet(UNetConfig(base_channels=2, depth=3, batch_norm=False))
    for size in range(80, 130):
        if model.is_valid_input_size(size):
            out = model(torch.zeros(1, 1, size, size))
            assert out.shape[-1] == model.output_size(size)
        else:
            with pytest.raises(ValueError, match="cannot take"):
                model(torch.zeros(1, 1, size, size))


def test_same_padding_keeps_size():
    model = UNet(UNetConfig(padding="same", base_channels=4))
    assert model(torch.zeros(1, 1, 64, 40)).shape == (1, 2, 64, 40)
    with pytest.raises(ValueError):
        model(torch.zeros(1, 1, 60, 40))


def _positive_network(config):
    """A network whose every path carries signal: positive weights, no dead ReLUs."""
    model = UNet(config).double()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.abs() + 0.01)
    return model


@pytest.mark.parametrize(
    "config",
    [
        UNetConfig(base_channels=2, depth=2, batch_norm=False),
        UNetConfig(base_channels=2, depth=3, batch_norm=False),
        UNetConfig(base_channels=2, depth=3, batch_norm=False, padding="same"),
    ],
    ids=["valid-depth2", "valid-depth3", "same-depth3"],
)
def test_receptive_field_matches_measured_impulse_response(config):
    """The stated input window of every output pixel is exactly the pixels that move it.

    An impulse (one bright input column) must change precisely the outputs whose
    window contains it. Positive weights keep every path alive; a large impulse
    wins every max-pooling it enters, so no path hides behind a pooling.
    """
    model = _positive_network(config)
    width = model.valid_input_size(2 * model.receptive_field + 16)
    height = model.valid_input_size(8 if config.padding == "same" else 100)
    windows = model.input_windows(width)
    images = torch.ones(width, 1, height, width, dtype=torch.float64)
    for column in range(width):
        images[column, 0, :, column] = 1e3
    with torch.no_grad():
        baseline = model(torch.ones(1, 1, height, width, dtype=torch.float64))
        change = (model(images) - baseline).abs() > 1e-6 * baseline.abs()
        moved = change[:, 1].any(dim=1).numpy()  # (impulse, output)
    for output in range(moved.shape[1]):
        support = np.flatnonzero(moved[:, output])
        assert (support[0], support[-1]) == (windows.first[output], windows.last[output])
    if config.padding == "valid":
        assert windows.sizes.max() == model.receptive_field


def test_receptive_field_of_paper_network():
    # Analytic composition: convolutions add 2 px per 3x3 at their resolution, poolings double.
    model = UNet(UNetConfig.paper())
    windows = model.input_windows(572)
    assert model.receptive_field == windows.sizes.max() == 204
    assert windows.sizes.min() == 188


def test_for_inference_matches_batch_norm_model():
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_channels=4, depth=2))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    image = torch.rand(2, 1, 92, 92)
    with torch.no_grad():
        expected = model(image)
        fused = model.for_inference()(image)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.for_inference().modules())
    torch.testing.assert_close(fused, expected, atol=1e-5, rtol=1e-5)
