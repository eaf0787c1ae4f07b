"""From probabilities to labels, and the checks on images before prediction."""

import numpy as np
import pytest
from skimage.draw import disk

from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.model.files import ModelInfo
from napari_unet_lab.core.model.unet import UNet
from napari_unet_lab.core.predict.objects import class_labels, object_labels
from napari_unet_lab.core.predict.segment import check_image, image_channel_axis, segment


def _two_touching_disks(gap=False):
    foreground = np.zeros((60, 90), np.float32)
    for centre in ((30, 30), (30, 55)):
        foreground[disk(centre, 13, shape=foreground.shape)] = 1.0
    if gap:  # the one-pixel background line the network learns between touching objects
        foreground[:, 42] = 0.3
    return foreground


def test_objects_separated_by_the_networks_gap_are_two_and_grow_back():
    labels = object_labels(_two_touching_disks(gap=True), threshold=0.5, split_touching=False)
    assert labels.max() == 2
    # the gap (probability 0.3 > threshold / 2) is given back to the objects
    assert (labels[17:44, 42] > 0).all()


def test_touching_objects_with_a_neck_are_split():
    labels = object_labels(_two_touching_disks())
    assert labels.max() == 2
    assert labels[30, 30] != labels[30, 55]
    assert object_labels(_two_touching_disks(), split_touching=False).max() == 1


def test_small_specks_are_removed_and_empty_is_empty():
    speck = np.zeros((30, 30), np.float32)
    speck[5:7, 5:7] = 1
    assert object_labels(speck, min_size=15).max() == 0
    assert object_labels(np.zeros((10, 10))).max() == 0


def test_stack_labels_are_unique_through_the_stack():
    stack = np.stack([_two_touching_disks(gap=True)] * 3)
    labels = object_labels(stack, split_touching=False)
    assert labels.shape == stack.shape
    assert len(np.unique(labels)) == 1 + 6


def test_class_labels_are_the_argmax():
    probabilities = np.zeros((3, 2, 2), np.float32)
    probabilities[0] = 0.5
    probabilities[2, 1, 1] = 0.9
    assert np.array_equal(class_labels(probabilities), [[0, 0], [0, 2]])


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
        ((50, 60, 3), 1, True, "RGB"),
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


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32, np.float64, bool])
def test_segment_takes_common_dtypes(dtype):
    config = UNetConfig(base_channels=4, depth=2)
    info = ModelInfo(config=config, class_names=["background", "object"])
    image = (np.random.default_rng(0).random((40, 50)) * 200).astype(dtype)
    result = segment(UNet(config), info, image, tile_size=None)
    assert result.objects.shape == result.classes.shape == result.foreground.shape == (40, 50)
    assert result.probabilities.shape == (2, 40, 50)
    np.testing.assert_allclose(result.probabilities.sum(0), 1, atol=1e-5)


def test_a_long_convex_object_is_never_cut():
    from skimage.draw import ellipse

    foreground = np.zeros((60, 120), np.float32)
    foreground[ellipse(30, 60, 12, 50, shape=foreground.shape)] = 1.0
    assert object_labels(foreground).max() == 1
