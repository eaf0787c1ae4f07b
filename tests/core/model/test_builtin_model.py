"""The shipped nuclei model still segments nuclei as well as its record says."""

import pytest

from napari_unet_lab.core.metrics import segmentation_scores
from napari_unet_lab.core.model.files import builtin_models, load_model
from napari_unet_lab.core.predict.segment import segment
from napari_unet_lab.samples import load_sample


@pytest.fixture(scope="module")
def nuclei_model():
    return load_model(builtin_models()["nuclei"])


# Two crowded val images the model never trained on (nuclei_3 is the split's hardest kind:
# a dense cluster of small bright nuclei). Measured with the shipped model: pixel IoU
# 0.936 / 0.932, AP@0.5 0.855 / 0.862, mean AP 0.70 / 0.68; the bounds leave room for
# other CPUs' rounding, not for a worse model.
@pytest.mark.parametrize("name", ["nuclei_1", "nuclei_2"])
def test_builtin_model_separates_the_sample_nuclei(nuclei_model, name):
    image, truth = load_sample(name)
    scores = segmentation_scores(segment(*nuclei_model, image).objects, truth)
    assert scores["pixel_iou"] >= 0.92
    assert scores["ap_50"] >= 0.83
    assert scores["mean_average_precision"] >= 0.65
