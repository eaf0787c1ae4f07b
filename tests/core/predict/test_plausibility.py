"""An image unlike the training images is flagged; the images the model knows are not.

Calibration with the built-in nuclei model: the three BBBC039 samples must pass
silently, the sample inverted, magnified 4× or replaced by noise must be flagged.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.model.builtin import builtin_models
from napari_unet_lab.core.model.files import ModelInfo, load_model
from napari_unet_lab.core.predict.plausibility import (
    TRAINING_DIAMETER_KEY,
    measure_plausibility,
    training_diameter,
    unlike_training_warning,
)
from napari_unet_lab.core.predict.segment import Segmentation, segment
from napari_unet_lab.samples import load_sample

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Median equivalent diameter of the nuclei in the samples' ground truth: 26.5–27.9 px.
NUCLEI_DIAMETER = 27.0


@pytest.fixture(scope="module")
def nuclei_model():
    return load_model(builtin_models()["nuclei"])


@pytest.mark.parametrize("name", ["nuclei_1", "nuclei_2", "nuclei_3"])
@pytest.mark.parametrize("diameter", [None, NUCLEI_DIAMETER], ids=["no diameter", "diameter"])
@pytest.mark.parametrize("size", [None, "auto"], ids=["as trained", "resized for their size"])
def test_the_samples_the_model_knows_pass_silently(nuclei_model, name, diameter, size) -> None:
    image, _ = load_sample(name)

    result = segment(*nuclei_model, image, device="cpu", object_diameter=size)

    assert unlike_training_warning(result, training_diameter=diameter) is None


def test_an_inverted_image_is_flagged(nuclei_model) -> None:
    image, _ = load_sample("nuclei_1")

    result = segment(*nuclei_model, image.max() - image, device="cpu")

    warning = unlike_training_warning(result)
    assert warning is not None
    assert warning.startswith("This image may be unlike the images the model was trained on: ")
    assert "of the image was taken for objects" in warning
    assert measure_plausibility(result).cover > 0.85


def test_an_image_magnified_4x_is_flagged_when_the_model_knows_its_objects(nuclei_model) -> None:
    image, _ = load_sample("nuclei_1")
    magnified = ndi.zoom(image[100:300, 200:400].astype(np.float32), 4, order=1)

    result = segment(*nuclei_model, magnified, device="cpu")

    warning = unlike_training_warning(result, training_diameter=NUCLEI_DIAMETER)
    assert warning is not None
    assert "pixels across, the training objects about 27 (another magnification?)" in warning


def test_noise_is_flagged_by_the_model_s_doubt(nuclei_model) -> None:
    noise = np.random.default_rng(0).integers(0, 4000, (256, 256)).astype(np.uint16)

    result = segment(*nuclei_model, noise, device="cpu")

    warning = unlike_training_warning(result)
    assert warning is not None and "the model is unsure of the objects it found" in warning


def test_hundreds_of_tiny_fragments_are_flagged() -> None:
    """Objects of 20 px when 15 px is the smallest kept: fragments, not nuclei."""
    objects = np.zeros((200, 200), np.uint32)
    for index in range(100):
        y, x = divmod(index, 10)
        objects[20 * y : 20 * y + 4, 20 * x : 20 * x + 5] = index + 1
    foreground = (objects > 0).astype(np.float32)
    probabilities = np.stack([1 - foreground, foreground])  # sure of every pixel
    result = Segmentation(probabilities, (objects > 0).astype(np.uint8), foreground, objects)

    warning = unlike_training_warning(result, min_size=15)

    assert warning == (
        "This image may be unlike the images the model was trained on: 100% of the 100 "
        "objects are tiny fragments (under 60 pixels). Check the result before using it."
    )


def test_the_training_diameter_is_read_from_the_model_file_when_recorded() -> None:
    config = UNetConfig(base_channels=4, depth=2)
    recorded = ModelInfo(config, ["background", "object"], provenance={TRAINING_DIAMETER_KEY: 27})

    assert training_diameter(recorded) == 27.0
    assert training_diameter(ModelInfo(config, ["background", "object"])) is None
