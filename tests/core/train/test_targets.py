"""Training targets: a gap between touching objects, and the weights of eq. 2 of the U-Net paper.

The fast border weight map must agree with the literal definition (one distance
transform per object over the whole image) to within 1e-3 everywhere.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet_lab.core.train.targets import (
    border_weight_map,
    border_weight_map_naive,
    class_balance_weights,
    semantic_target_from_instances,
)
from napari_unet_lab.samples import load_sample


def touching_disks(shape=(96, 96), count=8, radius=(6, 12), seed=0) -> np.ndarray:
    """Instance labels of overlapping disks: later disks cut into earlier ones, so many touch."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.int32)
    yy, xx = np.indices(shape)
    for label in range(1, count + 1):
        r = rng.uniform(*radius)
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r**2] = label
    return labels


def touching_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of different objects with 8-neighbouring pixels."""
    pairs = set()
    for dy, dx in [(0, 1), (1, 0), (1, 1), (1, -1)]:
        a = labels[max(dy, 0) :, max(-dx, 0) : labels.shape[1] - max(dx, 0)]
        b = labels[: labels.shape[0] - dy, max(dx, 0) :][:, : a.shape[1]]
        mask = (a > 0) & (b > 0) & (a != b)
        pairs |= {tuple(sorted(p)) for p in zip(a[mask].tolist(), b[mask].tolist(), strict=True)}
    return pairs


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("w0", "sigma"), [(10.0, 5.0), (5.0, 2.0), (10.0, 8.0)])
def test_weight_map_matches_the_literal_definition_on_touching_disks(seed, w0, sigma) -> None:
    labels = touching_disks(seed=seed)
    assert touching_pairs(labels)  # the case the weights are for

    fast = border_weight_map(labels, w0=w0, sigma=sigma)
    naive = border_weight_map_naive(labels, w0=w0, sigma=sigma)

    assert fast.dtype == np.float32 and fast.shape == labels.shape
    np.testing.assert_allclose(fast, naive, rtol=0, atol=1e-3)


def test_weight_map_matches_the_literal_definition_on_real_nuclei() -> None:
    _, labels = load_sample("nuclei_1")
    crop = labels[384:512, 384:512]  # crowded: about 20 nuclei, many touching
    assert len(touching_pairs(crop)) >= 3

    fast = border_weight_map(crop, class_weights=(0.6, 2.5))
    naive = border_weight_map_naive(crop, class_weights=(0.6, 2.5))

    np.testing.assert_allclose(fast, naive, rtol=0, atol=1e-3)
    assert fast.max() > 0.6 + 5  # the separation term is there


def test_weights_between_two_objects_by_hand() -> None:
    """Two rectangles with a 6 px wide background gap between them (eq. 2 by hand)."""
    labels = np.zeros((20, 30), dtype=np.uint16)
    labels[5:15, 5:12] = 1  # columns 5..11
    labels[5:15, 18:25] = 2  # columns 18..24
    w0, sigma, w_background, w_object = 10.0, 5.0, 0.5, 2.0

    weights = border_weight_map(labels, w0=w0, sigma=sigma, class_weights=(w_background, w_object))

    # column 14 is 3 px from column 11 and 4 px from column 18
    assert weights[10, 14] == pytest.approx(w_background + w0 * math.exp(-(7**2) / (2 * sigma**2)))
    # inside object 1 at its right edge: d1 = 0, d2 = 7 (to column 18)
    assert weights[10, 11] == pytest.approx(w_object + w0 * math.exp(-(7**2) / (2 * sigma**2)))
    # a corner pixel far from both objects gets the class weight only (to float32 precision)
    far = border_weight_map(
        np.pad(labels, ((0, 0), (0, 200))), w0=w0, sigma=sigma, class_weights=(0.5, 2)
    )
    assert far[0, -1] == pytest.approx(w_background)


def test_pixel_equidistant_between_two_objects() -> None:
    labels = np.zeros((9, 9), dtype=np.int32)
    labels[4, 1] = 1
    labels[4, 7] = 2  # pixel (4, 4) is 3 px from each
    weights = border_weight_map(labels, w0=10, sigma=5, class_weights=(1, 1))
    assert weights[4, 4] == pytest.approx(1 + 10 * math.exp(-(6**2) / 50), abs=1e-6)
    # off the axis: (1, 4) is sqrt(9 + 9) from each
    assert weights[1, 4] == pytest.approx(1 + 10 * math.exp(-((2 * math.sqrt(18)) ** 2) / 50))


def test_fewer_than_two_objects_gives_class_weights_only() -> None:
    labels = np.zeros((16, 16), dtype=np.int32)
    np.testing.assert_array_equal(border_weight_map(labels, class_weights=(1, 3)), 1)
    labels[4:8, 4:8] = 5
    weights = border_weight_map(labels, class_weights=(1, 3))
    np.testing.assert_array_equal(weights, np.where(labels > 0, 3, 1))
    np.testing.assert_array_equal(weights, border_weight_map_naive(labels, class_weights=(1, 3)))


def test_default_class_weights_balance_the_classes() -> None:
    labels = touching_disks()
    target = semantic_target_from_instances(labels)
    weights = border_weight_map(labels, w0=0)
    # each class carries the same total weight, and the mean weight is 1
    assert weights[target == 0].sum() == pytest.approx(weights[target == 1].sum(), rel=1e-5)
    assert weights.mean() == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(class_balance_weights([np.array([0, 0, 0, 1])]), [2 / 3, 2])


def test_touching_objects_are_separated_by_background() -> None:
    labels = touching_disks(seed=1)
    target = semantic_target_from_instances(labels)

    assert target.dtype == np.uint8 and set(np.unique(target)) <= {0, 1}
    assert not target[labels == 0].any()  # background stays background
    # after the gap, no two objects touch, even diagonally
    kept = np.where(target == 1, labels, 0)
    assert touching_pairs(labels) and not touching_pairs(kept)
    # the gap is one pixel: only pixels next to another object are removed
    removed = (labels > 0) & (target == 0)
    other_nearby = ndi.maximum_filter(labels, size=3) > labels
    assert np.array_equal(removed, (labels > 0) & other_nearby)
    # every object keeps most of its pixels
    for label in np.unique(labels[labels > 0]):
        assert (target[labels == label] == 1).mean() > 0.5


def test_two_objects_side_by_side_get_a_one_pixel_gap() -> None:
    labels = np.zeros((5, 8), dtype=np.int32)
    labels[1:4, 1:4] = 1
    labels[1:4, 4:7] = 2
    target = semantic_target_from_instances(labels)
    np.testing.assert_array_equal(target[2], [0, 1, 1, 0, 1, 1, 1, 0])
    np.testing.assert_array_equal(target[:, 3], 0)
