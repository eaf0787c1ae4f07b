"""The object-size benchmark's own measurements: resampling, size estimates, kinds of image."""

import numpy as np
import pytest
from benchmarks.bench_object_size import (
    image_kind,
    resampled,
    size_estimates,
    spread,
    summarise_scales,
    within,
)


def disk(shape, centre, radius):
    """Return a boolean disk of `radius` pixels around `centre`."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.hypot(yy - centre[0], xx - centre[1]) <= radius


def test_resampled_scales_the_true_diameter_and_keeps_label_ids():
    labels = np.zeros((60, 80), np.uint16)
    labels[disk(labels.shape, (20, 20), 8)] = 3
    labels[disk(labels.shape, (40, 55), 8)] = 7
    image = (labels > 0).astype(np.uint16) * 1000
    for factor in (0.5, 2.0, 3.0):
        big_image, big_labels = resampled(image, labels, factor)
        assert big_labels.shape == big_image.shape == (round(60 * factor), round(80 * factor))
        assert big_labels.dtype == np.uint16
        assert set(np.unique(big_labels)) == {0, 3, 7}  # nearest neighbour: no mixed ids
        diameters = size_estimates(big_labels)["median"]
        assert diameters == pytest.approx(size_estimates(labels)["median"] * factor, rel=0.05)
    assert resampled(image, labels, 1.0)[1] is labels


def test_size_estimates_leave_out_cut_objects_and_weigh_by_area():
    objects = np.zeros((100, 100), np.int32)
    for label, centre in enumerate([(30, 30), (30, 70), (70, 30), (70, 70)], start=1):
        objects[disk(objects.shape, centre, 10)] = label  # 317 px each: 20.1 px across
    objects[0:3, 50:53] = 5  # a fragment cut by the border
    objects[50:52, 50:52] = 6  # and one inside
    estimates = size_estimates(objects)
    whole = np.sqrt(4 * np.count_nonzero(objects == 1) / np.pi)
    small = np.sqrt(4 * 4 / np.pi)
    assert estimates["median"] == pytest.approx(whole)  # 4 of 6 objects are whole
    assert estimates["inner median"] == pytest.approx(whole)  # the cut fragment is left out
    assert estimates["area-weighted median"] == pytest.approx(whole)
    objects[objects == 4] = 0
    objects[objects == 3] = 0  # now 2 whole, 2 fragments: the plain median falls between
    assert size_estimates(objects)["median"] == pytest.approx((whole + small) / 2, rel=0.2)
    assert size_estimates(objects)["area-weighted median"] == pytest.approx(whole)
    assert size_estimates(np.zeros((5, 5), int)) == {
        "median": None,
        "inner median": None,
        "area-weighted median": None,
    }


def test_image_kind_by_colour_contrast_and_object_size():
    labels = np.zeros((40, 40), np.uint16)
    labels[disk(labels.shape, (20, 20), 6)] = 1
    bright_objects = np.where(labels > 0, 200, 10).astype(np.uint8)
    assert image_kind({"median_object_area": 100}, bright_objects, labels) == "grayscale small"
    assert image_kind({"median_object_area": 150}, bright_objects, labels) == "grayscale medium"
    assert image_kind({"median_object_area": 601}, bright_objects, labels) == "grayscale large"
    dark_objects = 255 - bright_objects
    assert image_kind({"median_object_area": 100}, dark_objects, labels) == "brightfield"
    rgb = np.stack([bright_objects] * 3, axis=-1)
    assert image_kind({"median_object_area": 100}, rgb, labels) == "RGB"


def test_spread_keeps_the_ends_of_the_split_and_all_for_none():
    assert spread(list(range(50)), 10) == [0, 5, 11, 16, 22, 27, 33, 38, 44, 49]
    assert spread(list("abc"), None) == list("abc") == spread(list("abc"), 5)


def test_within_15_percent_and_none_is_a_miss():
    assert within(11.5, 10.0) and within(8.5, 10.0)
    assert not within(11.6, 10.0) and not within(None, 10.0)


def test_summary_compares_every_scale_with_1x():
    def row(scale, ap, estimate, truth):
        estimates = {"median": estimate, "inner median": None, "area-weighted median": truth}
        return {
            "scale": scale,
            "true_diameter": truth,
            "as trained": {"ap_50": ap, "mean_ap": ap / 2, "estimates": estimates},
            "auto": {"ap_50": ap, "mean_ap": ap / 2, "estimate": estimate, "estimates": estimates},
        }

    rows = [row(1.0, 0.8, 10, 10), row(1.0, 0.6, 20, 10), row(0.5, 0.5, 5, 5), row(0.5, 0.5, 5, 5)]
    rows += [row(2.0, 0.7, 20, 20), row(2.0, 0.7, 30, 20), row(3.0, 0.7, None, 30)] * 1
    summary = summarise_scales(rows)
    assert summary["1.0"]["auto"]["ap_50"] == 0.7
    assert summary["0.5"]["auto"]["ap_50_minus_1x"] == -0.2
    assert summary["2.0"]["as trained"]["ap_50_minus_1x"] == 0.0
    assert summary["1.0"]["auto"]["within_15"] == 0.5
    assert summary["3.0"]["auto"]["within_15"] == 0.0
    assert summary["3.0"]["estimators_within_15"]["area-weighted median, auto objects"] == 1.0
