"""The shipped sample data loads and is what its README says it is."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from napari_unet_lab import samples


def test_three_samples_are_shipped() -> None:
    assert samples.sample_names() == ["nuclei_1", "nuclei_2", "nuclei_3"]


@pytest.mark.parametrize("name", ["nuclei_1", "nuclei_2", "nuclei_3"])
def test_sample_is_a_crowded_nucleus_image_with_ground_truth(name) -> None:
    image, labels = samples.load_sample(name)

    assert image.dtype == np.uint16
    assert image.shape == (520, 696)
    assert image.max() < 4096  # 12-bit camera data in a 16-bit container
    assert labels.shape == image.shape
    assert np.issubdtype(labels.dtype, np.integer)
    assert len(np.unique(labels[labels > 0])) > 50
    # Ground truth sits on the nuclei: labelled pixels are brighter than background.
    assert image[labels > 0].mean() > 2 * image[labels == 0].mean()


def test_unknown_sample_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="nuclei_1"):
        samples.load_sample("cells")


@pytest.mark.parametrize(
    ("loader", "name"),
    [
        (samples.nuclei_sample, "nuclei_1"),
        (samples.nuclei_sample_2, "nuclei_2"),
        (samples.nuclei_sample_3, "nuclei_3"),
    ],
)
def test_sample_commands_return_napari_layer_data(loader, name) -> None:
    layers = loader()

    assert [layer_type for _, _, layer_type in layers] == ["image", "labels"]
    (image, image_kwargs, _), (labels, labels_kwargs, _) = layers
    assert isinstance(image, np.ndarray) and isinstance(labels, np.ndarray)
    assert image.shape == labels.shape == (520, 696)
    assert image_kwargs["name"] == name
    assert labels_kwargs["name"] == f"{name} ground truth"
    low, high = image_kwargs["contrast_limits"]
    assert 0 <= low < high <= 4095


def test_samples_module_needs_no_gui() -> None:
    """Loading samples (demo, scripts, benchmarks) must not pull in napari or Qt."""
    code = (
        "import sys, napari_unet_lab.samples as samples; samples.load_sample('nuclei_1'); "
        "print(sorted({'napari', 'qtpy', 'PyQt5'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
