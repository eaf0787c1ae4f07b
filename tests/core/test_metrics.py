"""Object-level average precision, the measure used for nuclei segmentation."""

import numpy as np
import pytest

from napari_unet_lab.core.metrics import average_precision, pixel_iou


def test_perfect_and_empty():
    truth = np.array([[1, 1, 0, 2, 2, 0, 3]])
    assert average_precision(truth * 7, truth, (0.5, 0.9)) == {0.5: 1.0, 0.9: 1.0}
    assert average_precision(np.zeros((3, 3), int), np.zeros((3, 3), int)) == {0.5: 1.0}


def test_counts_true_false_positives_and_misses():
    truth = np.zeros((10, 10), int)
    truth[0:4, 0:4] = 1  # found well
    truth[6:10, 6:10] = 2  # missed
    prediction = np.zeros((10, 10), int)
    prediction[0:4, 0:3] = 5  # IoU 12/16 = 0.75
    prediction[6:8, 0:2] = 9  # false positive
    ap = average_precision(prediction, truth, (0.5, 0.8))
    assert ap[0.5] == pytest.approx(1 / 3)  # TP 1, FP 1, FN 1
    assert ap[0.8] == 0.0


def test_merged_objects_count_once():
    truth = np.array([[1, 1, 1, 2, 2, 2]])
    merged = np.array([[4, 4, 4, 4, 4, 4]])
    assert average_precision(merged, truth)[0.5] == 0.0  # IoU 0.5 exactly does not match


def test_threshold_below_half_is_refused():
    with pytest.raises(ValueError):
        average_precision(np.zeros((2, 2), int), np.zeros((2, 2), int), (0.3,))


def test_pixel_iou():
    assert pixel_iou(np.array([1, 1, 0]), np.array([0, 1, 1])) == pytest.approx(1 / 3)
