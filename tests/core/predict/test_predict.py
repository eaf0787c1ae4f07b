"""From probabilities to labels: classes and separated objects, for any image type.

The checks on images before prediction are in tests/core/test_images.py.
"""

import inspect

import numpy as np
import pytest
from skimage.draw import disk

from napari_unet_lab.core.config import ObjectConfig, UNetConfig
from napari_unet_lab.core.model.files import ModelInfo
from napari_unet_lab.core.model.unet import UNet
from napari_unet_lab.core.predict.objects import class_labels, object_labels
from napari_unet_lab.core.predict.segment import segment


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


def test_object_defaults_live_in_object_config():
    """One home for the measured defaults: object_labels takes its own from ObjectConfig."""
    defaults = ObjectConfig()
    assert (defaults.threshold, defaults.split_depth, defaults.min_size) == (0.8, 2.0, 15)
    signature = inspect.signature(object_labels).parameters
    for name, value in defaults.to_dict().items():
        assert signature[name].default == value, name
    assert ObjectConfig.from_dict({"threshold": 0.6}).threshold == 0.6
    with pytest.raises(ValueError, match="unknown object settings: \\['depth'\\]"):
        ObjectConfig.from_dict({"depth": 3})
    with pytest.raises(ValueError, match="object threshold must be between 0 and 1, got 1.5"):
        ObjectConfig(threshold=1.5)


@pytest.mark.parametrize(("low", "high"), [(100, 100), (900, 100)])
def test_segment_refuses_a_fixed_normalisation_that_would_find_nothing(low, high):
    """low == high made every pixel the same: 0 objects, and no word why."""
    config = UNetConfig(base_channels=4, depth=2)
    info = ModelInfo(config=config, class_names=["background", "object"], name="test")
    info.normalization = {"method": "fixed", "low": low, "high": high}
    with pytest.raises(ValueError) as refused:
        segment(UNet(config), info, np.full((40, 40), 100, np.uint16), device="cpu")
    assert str(refused.value) == (
        "the intensity normalisation cannot be used: normalization.low must be below "
        f"normalization.high, not {low}, {high}"
    )


def test_a_grayscale_model_segments_an_rgb_image_as_its_luminance_and_says_so():
    """Issue #12: RGB (stained tissue) is converted, documented, never refused."""
    from napari_unet_lab.core.images import grayscale

    config = UNetConfig(base_channels=4, depth=2)
    info = ModelInfo(config=config, class_names=["background", "object"])
    model = UNet(config)
    rgb = np.random.default_rng(3).integers(0, 255, (2, 40, 50, 3), dtype=np.uint8)
    rgb[:, 10:25, 12:30] = (120, 40, 160)  # a purple blob, as in stained tissue
    result = segment(model, info, rgb, rgb=True, tile_size=32)
    expected = segment(model, info, grayscale(rgb), tile_size=32)
    assert np.array_equal(result.probabilities, expected.probabilities)
    assert np.array_equal(result.objects, expected.objects)
    assert result.objects.shape == (2, 40, 50)
    assert result.image_note == "RGB image converted to grayscale (luminance) for a grayscale model"
    assert expected.image_note == ""
