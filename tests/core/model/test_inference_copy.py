"""The inference copy: batch norm folded, channels last, the training model untouched."""

import numpy as np
import pytest
import torch

from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.model.unet import Conv1x1, UNet


def _model(**settings):
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_channels=8, depth=2, **settings))
    for module in model.modules():  # non-trivial batch-norm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.3, 0.3)
            module.running_var.uniform_(0.5, 2.0)
    return model


def test_channels_last_copy_is_the_same_network_to_float_rounding():
    model = _model()
    image = torch.rand(1, 1, 92, 124)
    with torch.inference_mode():
        default = model.for_inference()
        plain = model.for_inference(channels_last=False)
        scores = default(image)
        expected = plain(image)
    weights = [m.weight for m in default.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    assert scores.shape == expected.shape == (1, 2, 52, 84)
    assert 0 < (scores - expected).abs().max() < 1e-5  # rounding only, but another path


def test_the_training_model_is_left_as_it_was():
    """Training never sees the inference copy: same tensors, layout, batch norm and mode."""
    model = _model().train()
    before = {name: (t.data_ptr(), t.clone()) for name, t in model.state_dict().items()}
    model.for_inference()
    assert model.training
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 10
    for name, tensor in model.state_dict().items():
        assert tensor.data_ptr() == before[name][0], name
        assert torch.equal(tensor, before[name][1]), name
        assert tensor.is_contiguous(), name
    # a training step runs as before: gradients for every weight
    loss = model(torch.rand(2, 1, 92, 92)).square().mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format])
def test_head_gives_a_pixel_the_same_bits_whatever_the_image_size(memory_format):
    """The 1x1 head (oneDNN channels last, a running sum otherwise) is exact on any crop."""
    torch.manual_seed(1)
    head = Conv1x1(32, 3)
    head.sum_with_onednn = memory_format == torch.channels_last  # as `for_inference` sets it
    features = torch.randn(1, 32, 301, 257).contiguous(memory_format=memory_format)
    rng = np.random.default_rng(0)
    with torch.inference_mode():
        whole = head(features)
        for height, width in [(1, 1), (1, 2), (3, 5), (16, 16), (17, 31), (120, 77), (300, 1)]:
            top = int(rng.integers(0, 301 - height + 1))
            left = int(rng.integers(0, 257 - width + 1))
            crop = features[..., top : top + height, left : left + width]
            crop = crop.contiguous(memory_format=memory_format)
            got = head(crop)
            assert torch.equal(got, whole[..., top : top + height, left : left + width])
