"""Input gradients obey receptive-field theory and equal those of the whole-image pass."""

import numpy as np
import pytest
import torch
from torch import nn

from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.look_inside.geometry import theoretical_extent
from napari_unet_lab.core.look_inside.receptive_field import (
    EffectiveReceptiveField,
    fit_gaussian,
    input_gradient,
    iter_effective_receptive_field,
    iter_trained_and_untrained,
)
from napari_unet_lab.core.model.unet import randomly_initialised
from napari_unet_lab.core.predict.tile_plan import mirror_indices, plan_axis
from napari_unet_lab.core.progress import run_to_end


# ----------------------------------------------------------------------------- gradients
def _whole_image_gradients(model, image, positions, class_index=1):
    """Gradients from one pass over the whole mirrored image, as prediction plans it."""
    plans = [plan_axis(model, length, None) for length in image.shape]
    starts = [plan.input_starts[0] for plan in plans]  # image index of the first input pixel
    ys, xs = (
        mirror_indices(start, plan.tile_input, length)
        for start, plan, length in zip(starts, plans, image.shape, strict=True)
    )
    inputs = torch.from_numpy(image[np.ix_(ys, xs)][None, None]).requires_grad_(True)
    out = model(inputs)
    gradients = []
    for position in positions:
        # output pixel k lies over input pixel k + output_offset
        row, column = (p - s - model.output_offset for p, s in zip(position, starts, strict=True))
        (gradient,) = torch.autograd.grad(
            out[0, class_index, row, column], inputs, retain_graph=True
        )
        gradients.append(gradient[0, 0].numpy())
    return gradients, starts


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_gradient_on_the_minimal_crop_is_that_of_the_whole_image(padding):
    config = UNetConfig(base_channels=4, depth=2, batch_norm=False, padding=padding)
    model = randomly_initialised(config, generator=3).double()
    image = np.random.default_rng(2).random((29, 43))
    positions = [(0, 0), (13, 30), (28, 42)]
    wholes, origin = _whole_image_gradients(model, image, positions)
    for position, whole in zip(positions, wholes, strict=True):
        pixel = input_gradient(model, image, position)
        if padding == "valid":  # the smallest input, or the next size for some pooling phases
            assert max(pixel.gradient.shape[1:]) <= model.valid_input_size(model.min_input_size + 1)
        top, left = (pixel.origin[axis] - origin[axis] for axis in (0, 1))
        height, width = pixel.gradient.shape[1:]
        np.testing.assert_allclose(
            pixel.gradient[0], whole[top : top + height, left : left + width], atol=1e-12
        )
        # and nothing outside the crop moves that pixel
        whole[top : top + height, left : left + width] = 0
        assert not whole.any()


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_gradient_is_zero_outside_the_theoretical_receptive_field_and_reaches_its_edge(padding):
    """The receptive field is exactly where an output pixel can look (random weights).

    At any single pixel some paths are switched off (a ReLU below zero, the
    losing inputs of a max-pooling); averaged over a few pixels of the same
    pooling phase, every row and column of the window is reached, its edges included.
    """
    config = UNetConfig(base_channels=4, depth=2, padding=padding)
    model = randomly_initialised(config, generator=4)
    image = np.random.default_rng(3).random((120, 120)).astype(np.float32)
    grid = model.size_multiple
    total = None
    for row, column in [(40, 44), (48, 60), (64, 52), (72, 76), (80, 40)]:
        row, column = row // grid * grid + 1, column // grid * grid + 2  # one phase
        pixel = input_gradient(model, image, (row, column))
        (first_row, last_row), (first_column, last_column) = pixel.window
        rows = np.arange(pixel.gradient.shape[1]) + pixel.origin[0]
        columns = np.arange(pixel.gradient.shape[2]) + pixel.origin[1]
        inside = ((rows >= first_row) & (rows <= last_row))[:, None] & (
            (columns >= first_column) & (columns <= last_column)
        )[None, :]
        assert not pixel.magnitude[~inside].any()
        relative = pixel.magnitude[inside].reshape(last_row - first_row + 1, -1)
        total = relative if total is None else total + relative
    assert last_row - first_row + 1 <= model.receptive_field
    assert total[0].any() and total[-1].any() and total[:, 0].any() and total[:, -1].any()
    assert total.any(axis=1).all() and total.any(axis=0).all()


def _linear_copy(model):
    """The same weights with the nonlinearities taken out: ReLU -> identity, max -> mean pooling."""
    model.pool = nn.AvgPool2d(2)
    for block in [*model.encoders, model.bottleneck, *model.decoders]:
        for index, layer in enumerate(block):
            if isinstance(layer, nn.ReLU):
                block[index] = nn.Identity()
    return model


def _compose(outer, inner):
    """Kernel of ``outer`` applied after ``inner`` (both cross-correlations, (out, in, h, w))."""
    height = outer.shape[2] + inner.shape[2] - 1
    width = outer.shape[3] + inner.shape[3] - 1
    kernel = np.zeros((outer.shape[0], inner.shape[1], height, width))
    for a in range(outer.shape[2]):
        for b in range(outer.shape[3]):
            kernel[:, :, a : a + inner.shape[2], b : b + inner.shape[3]] += np.einsum(
                "om,mihw->oihw", outer[:, :, a, b], inner
            )
    return kernel


def _dilate(kernel):
    dilated = np.zeros((*kernel.shape[:2], 2 * kernel.shape[2] - 1, 2 * kernel.shape[3] - 1))
    dilated[:, :, ::2, ::2] = kernel
    return dilated


def test_linear_network_effective_receptive_field_is_the_composed_kernel():
    """Without nonlinearities the network is a sum of convolutions along its two paths.

    For a one-pooling U-Net, the skip path is the composition of its 3x3 kernels;
    the deep path composes the encoder, the 2x2 mean pooling, the bottleneck
    (dilated by 2: it works on every other pixel), the 2x2 up-convolution
    (flipped: it scatters rather than gathers) and the decoder. Its kernel
    depends on the pooling phase of the output pixel; averaged over the 4
    phases it is that composition divided by 4. The gradient, averaged over
    pixels of all 4 phases, must be exactly their sum.
    """
    config = UNetConfig(base_channels=2, depth=1, batch_norm=False)
    model = _linear_copy(randomly_initialised(config, generator=5).double())
    weights = {name: p.detach().numpy() for name, p in model.named_parameters()}
    encoder = _compose(weights["encoders.0.2.weight"], weights["encoders.0.0.weight"])
    box = np.zeros((2, 2, 2, 2))
    box[[0, 1], [0, 1]] = 0.25  # mean pooling: channel by channel
    bottleneck = _compose(weights["bottleneck.2.weight"], weights["bottleneck.0.weight"])
    deep_down = _compose(_dilate(bottleneck), _compose(box, encoder))
    up = weights["upsamplers.0.weight"][:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
    first_decoder = weights["decoders.0.0.weight"]  # input channels: [skip, upsampled]
    second_decoder = weights["decoders.0.2.weight"]
    head = weights["head.weight"]
    skip_path = _compose(head, _compose(second_decoder, _compose(first_decoder[:, :2], encoder)))
    deep_path = (
        _compose(
            head, _compose(second_decoder, _compose(first_decoder[:, 2:], _compose(up, deep_down)))
        )
        / 4
    )

    # Where each kernel starts relative to the output pixel: the output is drawn
    # `output_offset` (8) pixels into the input; the skip path's encoder features
    # are cropped by 4 before the concatenation; the up-convolution of an
    # odd-phase pixel reads the coarse pixel one input pixel before it.
    assert model.output_offset == 8
    skip_start, deep_start = 4 - 8, -1 - 8
    before, after = theoretical_extent(model)
    expected = np.zeros((after - before + 1,) * 2)
    for kernel, start in ((skip_path, skip_start), (deep_path, deep_start)):
        at = start - before
        expected[at : at + kernel.shape[2], at : at + kernel.shape[3]] += kernel[1, 0]

    image = np.random.default_rng(4).random((40, 40))
    positions = [(0, 20 + dy, 16 + dx) for dy in (0, 1) for dx in (0, 1)]
    erf = run_to_end(
        iter_effective_receptive_field(model, [image], positions=positions, absolute=False)
    )
    np.testing.assert_allclose(erf.gradient, expected, rtol=1e-10, atol=1e-14)
    assert erf.theoretical == ((before, after), (before, after))
    assert erf.centre == (-before, -before)


def test_effective_receptive_field_is_a_small_gaussian_inside_the_theoretical_one():
    """Luo et al.: the gradient mass sits in a Gaussian-like blob much smaller than the RF."""
    model = randomly_initialised(UNetConfig(base_channels=8, depth=2), generator=6)
    images = [np.random.default_rng(seed).random((64, 64)).astype(np.float32) for seed in (5, 6)]
    work = iter_effective_receptive_field(model, images, n_positions=12, rng=0, batch_size=5)
    records = []
    while True:
        try:
            records.append(next(work))
        except StopIteration as stop:
            erf = stop.value
            break
    done = [r.done for r in records]
    assert done[0] == 0 and done[-1] == records[-1].total == 12 and done == sorted(set(done))
    assert len(erf.positions) == 12 and set(erf.positions[:, 0]) == {0, 1}
    fit = erf.fit
    assert fit.r_squared > 0.8
    assert max(abs(c) for c in fit.centre) < 3
    assert fit.effective_radius < model.receptive_field / 4
    assert erf.radius_holding() < model.receptive_field / 4
    # the same draw of positions, the same map
    again = run_to_end(iter_effective_receptive_field(model, images, n_positions=12, rng=0))
    np.testing.assert_allclose(again.gradient, erf.gradient, rtol=1e-5, atol=1e-9)


def test_fit_gaussian_recovers_an_anisotropic_gaussian():
    rows, columns = np.mgrid[0:41, 0:51]
    heat = 2.5 * np.exp(-0.5 * (((rows - 22) / 4.0) ** 2 + ((columns - 27) / 6.0) ** 2))
    fit = fit_gaussian(heat, centre=(20, 25))
    np.testing.assert_allclose(fit.centre, (2, 2), atol=1e-6)
    np.testing.assert_allclose(fit.sigma, (4, 6), atol=1e-6)
    assert fit.amplitude == pytest.approx(2.5) and fit.r_squared == pytest.approx(1.0)
    assert fit.effective_radius == pytest.approx(2 * np.sqrt(24))
    with pytest.raises(ValueError, match="zero everywhere"):
        fit_gaussian(np.zeros((5, 5)))


def test_radius_holding_a_share_of_the_gradient_is_two_sigma_for_a_gaussian():
    rows, columns = np.mgrid[-40:41, -40:41]
    heat = np.exp(-0.5 * (rows**2 + columns**2) / 5.0**2)
    erf = EffectiveReceptiveField(heat, (40, 40), ((-40, 40), (-40, 40)), np.zeros((0, 3)), None)
    assert erf.radius_holding() == pytest.approx(10, abs=0.5)  # 2 sigma holds 1 - e^-2
    ring = np.zeros_like(heat)
    ring[40, 43] = ring[37, 40] = 1.0  # all the gradient 3 px from the centre
    erf = EffectiveReceptiveField(ring, (40, 40), ((-40, 40), (-40, 40)), np.zeros((0, 3)), None)
    assert erf.radius_holding(0.3) == erf.radius_holding(1.0) == 3


def test_random_initialisation_is_reproducible_and_leaves_global_state_alone():
    config = UNetConfig(base_channels=2, depth=1)
    state = torch.random.get_rng_state()
    first, second = randomly_initialised(config, 7), randomly_initialised(config, 7)
    assert torch.equal(torch.random.get_rng_state(), state)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not first.training
    other = randomly_initialised(config, 8)
    assert not torch.equal(first.head.weight, other.head.weight)


def test_trained_and_untrained_are_averaged_over_the_same_pixels():
    config = UNetConfig(base_channels=2, depth=1)
    trained = randomly_initialised(config, 100)  # stands in for a trained model
    image = np.random.default_rng(7).random((30, 30))
    work = iter_trained_and_untrained(trained, [image], n_positions=3, seed=1)
    records = []
    while True:
        try:
            records.append(next(work))
        except StopIteration as stop:
            before_after = stop.value
            break
    assert records[-1].done == records[-1].total == 6
    assert all(a.done <= b.done for a, b in zip(records, records[1:], strict=False))
    trained_erf, untrained_erf = before_after
    np.testing.assert_array_equal(trained_erf.positions, untrained_erf.positions)
    assert not np.array_equal(trained_erf.gradient, untrained_erf.gradient)


@pytest.mark.parametrize(
    ("position", "class_index", "message"),
    [((30, 5), 1, "outside the image"), ((3, 3), 2, "class 2 does not exist")],
)
def test_bad_requests_give_a_clear_message(position, class_index, message):
    model = randomly_initialised(UNetConfig(base_channels=2, depth=1), 0)
    with pytest.raises(ValueError, match=message):
        input_gradient(model, np.zeros((20, 20)), position, class_index=class_index)
