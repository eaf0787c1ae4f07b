"""The RGB-conversion benchmark: each candidate gives one plane; gray pixels stay as they are."""

import numpy as np
import pytest
from benchmarks.bench_rgb_conversion import CONVERSIONS, summarise


@pytest.mark.parametrize("name", ["luminance", "darkest channel"])
def test_a_gray_rgb_image_keeps_its_values(name):
    plane = np.random.default_rng(0).integers(0, 256, (12, 9)).astype(np.uint8)
    converted = CONVERSIONS[name](np.stack([plane] * 3, axis=-1))
    assert converted.shape == (12, 9) and converted.dtype == np.float32
    np.testing.assert_allclose(converted, plane, atol=1e-3)


def test_every_conversion_gives_one_plane_and_the_summary_is_the_mean():
    rgb = np.random.default_rng(1).integers(0, 256, (10, 8, 3)).astype(np.uint8)
    assert all(convert(rgb).shape == (10, 8) for convert in CONVERSIONS.values())
    images = {
        "a": {name: [0.5, 0.25] for name in CONVERSIONS},
        "b": {name: [1.0, 0.75] for name in CONVERSIONS},
    }
    assert summarise(images)["saturation"] == [0.75, 0.5]
