"""One channel layout and one intensity mapping, the same for prediction, training and look-inside.

The promise: `normalised` gives a pixel the same float32 value whether a tile or the
whole image is normalised, so tiled prediction stays bit-identical to one pass.
"""

import numpy as np
import pytest
import torch

from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.images import (
    RGB_CONVERTED_NOTE,
    channels_first,
    check_image,
    grayscale,
    image_channel_axis,
    image_for_model,
    intensity_range_for,
    normalised,
    single_image_channels_first,
)
from napari_unet_lab.core.look_inside.geometry import network_input
from napari_unet_lab.core.model.schema import normalization_problem
from napari_unet_lab.core.model.unet import UNet, randomly_initialised
from napari_unet_lab.core.predict.tile_plan import mirror_indices
from napari_unet_lab.core.predict.tiling import predict_tiled


# ----------------------------------------------------------------------- intensity mapping
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32, np.float64])
def test_normalised_is_the_same_on_a_tile_and_on_the_whole_image(dtype):
    """Element by element in float32: where a pixel is cut from makes no difference."""
    image = (np.random.default_rng(0).random((3, 97, 131)) * 250 + 3).astype(dtype)
    intensity_range = intensity_range_for(image, None)  # percentiles 1 and 99.8
    whole = normalised(image, intensity_range)
    assert whole.dtype == np.float32
    for rows, columns in [(slice(0, 1), slice(0, 1)), (slice(13, 77), slice(5, 131))]:
        tile = normalised(image[..., rows, columns], intensity_range)
        assert np.array_equal(tile, whole[..., rows, columns])
    ys, xs = mirror_indices(-7, 40, 97), mirror_indices(120, 30, 131)  # mirrored past the border
    assert np.array_equal(
        normalised(image[:, ys[:, None], xs[None, :]], intensity_range),
        whole[:, ys[:, None], xs[None, :]],
    )


def test_normalised_maps_the_range_to_0_and_1_in_float32():
    values = np.array([100, 600, 1100], np.uint16)
    assert np.array_equal(normalised(values, (100.0, 1100.0)), [0.0, 0.5, 1.0])
    # the arithmetic, spelled out: subtract low, multiply by 1 / (high - low), both float32
    pixels = np.random.default_rng(1).random(1000).astype(np.float32) * 7
    expected = (pixels - np.float32(0.3)) * np.float32(1 / (6.9 - 0.3))
    assert np.array_equal(normalised(pixels, (0.3, 6.9)), expected)
    assert np.array_equal(normalised(values, (5.0, 5.0)), values - 5.0)  # constant: only shifted
    assert np.array_equal(normalised(values, None), values.astype(np.float32))


def test_normalised_refuses_nan_and_infinite_values_in_plain_words():
    with pytest.raises(ValueError, match="NaN or infinite values; fix or mask them first"):
        normalised(np.array([1.0, np.nan]), (0.0, 1.0))
    with pytest.raises(ValueError, match="NaN or infinite"):  # finite, but not in float32
        normalised(np.array([1e300]), None)


@pytest.mark.parametrize(
    ("low", "high", "problem"),
    [
        (5, 5, "normalization.low must be below normalization.high, not 5, 5"),
        (9.0, 2.0, "normalization.low must be below normalization.high, not 9.0, 2.0"),
        (float("nan"), 2.0, "normalization.low must be a finite number, not NaN"),
        (0.0, float("inf"), "normalization.high must be a finite number, not Infinity"),
        (0.0, 1e39, "normalization: the intensities 0.0, 1e+39 lie beyond what 32-bit images"),
        (-3e38, 3e38, "normalization: the intensities -3e+38, 3e+38 are too close together or"),
    ],
)
def test_a_fixed_normalisation_that_maps_everything_alike_is_refused(low, high, problem):
    """Such a range made every pixel 0 (or NaN): no objects, and no word why."""
    fixed = {"method": "fixed", "low": low, "high": high}
    assert normalization_problem(fixed).startswith(problem)
    with pytest.raises(ValueError) as refused:
        intensity_range_for(np.zeros((4, 4)), fixed)
    assert str(refused.value).startswith(f"the intensity normalisation cannot be used: {problem}")


def test_usable_normalisations_give_their_range():
    image = np.arange(1000, dtype=np.float32).reshape(20, 50)
    assert intensity_range_for(image, {"method": "fixed", "low": 12, "high": 850}) == (12.0, 850.0)
    assert intensity_range_for(image, {"method": "none"}) == (0.0, 1.0)
    assert intensity_range_for(image, {"method": "percentile"}) == intensity_range_for(image, None)
    with pytest.raises(ValueError, match="normalization.method must be one of percentile"):
        intensity_range_for(image, {"method": "zscore"})


@pytest.mark.parametrize(
    ("intensity_range", "problem"),
    [
        ((9.0, 2.0), "the intensity mapped to 0 (9.0) is above the one mapped to 1 (2.0)"),
        ((0.0, float("inf")), "the intensities mapped to 0 and 1 must be finite numbers"),
        ((float("nan"), 1.0), "the intensities mapped to 0 and 1 must be finite numbers"),
        ((0.0, 1e-40), "the intensities 0.0, 1e-40 are too close together or too far apart"),
    ],
)
def test_normalised_refuses_a_range_it_cannot_map(intensity_range, problem):
    with pytest.raises(ValueError) as refused:
        normalised(np.array([1.0, 2.0]), intensity_range)
    assert str(refused.value).startswith(f"cannot normalise the image: {problem}")


def test_prediction_is_the_network_on_the_normalised_mirrored_image():
    """predict_tiled's input is `normalised` of the mirrored image: not one bit differs."""
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_channels=4, depth=2))  # valid padding
    image = (np.random.default_rng(2).random((70, 90)) * 4000 + 200).astype(np.uint16)
    intensity_range = intensity_range_for(image, None)

    tiled = predict_tiled(
        model, image, tile_size=64, intensity_range=intensity_range, output="logits"
    )

    offset = model.output_offset
    height = model.valid_input_size(70 + 2 * offset)
    width = model.valid_input_size(90 + 2 * offset)
    ys, xs = mirror_indices(-offset, height, 70), mirror_indices(-offset, width, 90)
    inputs = normalised(image[ys[:, None], xs[None, :]], intensity_range)
    with torch.no_grad():
        whole = model.for_inference()(torch.from_numpy(inputs)[None, None])[0].numpy()
    assert np.array_equal(tiled, whole[:, :70, :90])


def test_look_inside_reads_the_network_input_through_normalised():
    model = randomly_initialised(UNetConfig(base_channels=2, depth=1), 0)
    image = (np.random.default_rng(3).random((1, 40, 50)) * 900).astype(np.uint16)
    ys, xs = mirror_indices(-10, 36, 40), mirror_indices(20, 44, 50)
    inputs = network_input(model, image, ys, xs, (12.0, 850.0))
    expected = normalised(image[:, ys[:, None], xs[None, :]], (12.0, 850.0))
    assert inputs.dtype == torch.float32 and inputs.shape == (1, 1, 36, 44)
    assert np.array_equal(inputs[0].numpy(), expected)


# ----------------------------------------------------------------------- channel layout
@pytest.mark.parametrize(
    ("shape", "channels", "rgb", "expected"),
    [
        ((50, 60), 1, False, None),
        ((5, 50, 60), 1, False, None),
        ((50, 60, 3), 3, True, 2),
        ((2, 50, 60), 2, False, 0),
        ((7, 2, 50, 60), 2, False, 1),
    ],
)
def test_channel_axis_is_found(shape, channels, rgb, expected):
    assert image_channel_axis(shape, channels, rgb) == expected


@pytest.mark.parametrize(
    ("shape", "channels", "rgb", "message"),
    [
        ((50, 60, 3), 1, True, "convert it to grayscale"),
        ((50, 60), 2, False, "no axis"),
        ((2, 2, 50, 60), 2, False, "more than one axis"),
        ((50, 60, 4), 3, True, "RGB image has 4"),
    ],
)
def test_channel_mismatch_is_explained(shape, channels, rgb, message):
    with pytest.raises(ValueError, match=message):
        image_channel_axis(shape, channels, rgb)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((0, 5)), "empty"),
        (np.zeros(5), "2D"),
        (np.array([[np.nan, 1.0]]), "NaN"),
        (np.zeros((4, 4), complex), "cannot segment"),
    ],
)
def test_bad_images_are_refused(image, message):
    with pytest.raises(ValueError, match=message):
        check_image(image)


def test_check_image_with_the_models_channels_gives_the_channel_axis():
    assert check_image(np.zeros((7, 2, 30, 40)), in_channels=2) == 1
    assert check_image(np.zeros((30, 40, 3), np.uint8), in_channels=3, rgb=True) == 2
    assert check_image(np.zeros((30, 40)), in_channels=1) is None
    with pytest.raises(ValueError, match="no axis of the image"):
        check_image(np.zeros((30, 40)), in_channels=2)


def test_channels_first_moves_channels_before_y_and_x():
    stack = np.arange(4 * 5 * 6 * 3).reshape(4, 5, 6, 3)
    moved = channels_first(stack, -1, in_channels=3)
    assert moved.shape == (4, 3, 5, 6)
    assert np.array_equal(moved[2, 1], stack[2, :, :, 1])
    assert channels_first(stack[0, ..., 0], None).shape == (1, 5, 6)
    assert channels_first(np.zeros((2, 5, 6)), 0).shape == (2, 5, 6)
    with pytest.raises(ValueError, match="expects 3 channel"):
        channels_first(stack[..., :2], -1, in_channels=3)
    with pytest.raises(ValueError, match="say which image axis"):
        channels_first(stack[..., 0], None, in_channels=3)
    with pytest.raises(ValueError, match="cannot be one of the two image"):
        channels_first(stack, -2)


def test_a_single_image_is_y_x_or_channels_first():
    assert single_image_channels_first(np.zeros((40, 30)), 1).shape == (1, 40, 30)
    assert single_image_channels_first(np.zeros((1, 40, 30)), 1).shape == (1, 40, 30)
    assert single_image_channels_first(np.zeros((3, 40, 30)), 3).shape == (3, 40, 30)
    with pytest.raises(ValueError, match=r"takes 3 channel\(s\): expected an image shaped \(3, Y"):
        single_image_channels_first(np.zeros((40, 30, 3)), 3)


# ------------------------------------------------------------------ RGB, grayscale model
def test_grayscale_is_rgb2gray_in_the_images_own_units_without_alpha():
    from skimage.color import rgb2gray

    rgba = np.random.default_rng(5).integers(0, 65535, (3, 20, 30, 4), dtype=np.uint16)
    gray = grayscale(rgba)
    assert gray.dtype == np.float32 and gray.shape == (3, 20, 30)
    # skimage's weights, but counts stay counts (rgb2gray would rescale uint16 to [0, 1])
    np.testing.assert_allclose(gray, rgb2gray(rgba[..., :3].astype(np.float32)), rtol=1e-6)
    pixel = rgba[1, 2, 3].astype(np.float64)
    expected = 0.2125 * pixel[0] + 0.7154 * pixel[1] + 0.0721 * pixel[2]  # alpha ignored
    assert gray[1, 2, 3] == pytest.approx(expected, rel=1e-6)
    # channels elsewhere, and a tile: the very same values (tiled prediction stays exact)
    assert np.array_equal(grayscale(np.moveaxis(rgba, -1, 1), channel_axis=1), gray)
    assert np.array_equal(grayscale(rgba[:, 5:17, 3:11]), gray[:, 5:17, 3:11])
    with pytest.raises(
        ValueError, match="an RGB image has 3 colours .4 with alpha., this one has 2"
    ):
        grayscale(rgba[..., :2])


def test_a_grayscale_model_takes_an_rgb_images_luminance_and_says_so():
    rgb = np.random.default_rng(6).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    image, still_rgb, note = image_for_model(rgb, in_channels=1, rgb=True)
    assert np.array_equal(image, grayscale(rgb)) and not still_rgb
    assert (
        note
        == RGB_CONVERTED_NOTE
        == ("RGB image converted to grayscale (luminance) for a grayscale model")
    )
    # a model for RGB images keeps the colours; a grayscale image stays as it is
    image, still_rgb, note = image_for_model(rgb, in_channels=3, rgb=True)
    assert image is rgb and still_rgb and note == ""
    plane = rgb[..., 0]
    image, still_rgb, note = image_for_model(plane, in_channels=1)
    assert image is plane and not still_rgb and note == ""
