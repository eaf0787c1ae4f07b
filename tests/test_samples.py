"""The shipped sample data loads and is what its README says it is."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage.segmentation import relabel_sequential

from napari_unet_lab import samples

# The DSB 2018 samples: source image id, the crop taken (None: the whole image), and the
# SHA-256 (first 16 hex digits) of the source pixels and of its ground truth (for the crop:
# renumbered 1..N in source order), computed from the source files when the samples were made.
DSB2018_SOURCE = Path("/work/shared/data/dsb2018_train")
DSB2018_SAMPLES = {
    "nuclei_large": (
        "f6cb37ebf29c225284c8415962f7287abe7007fae8fe3d8a3899b608b832d7d5",
        None,
        ("95b4e96980b7893f", "956439f1da228c1a"),
    ),
    "nuclei_brightfield": (
        "1a11552569160f0b1ea10bedbd628ce6c14f29edec5092034c2309c556df833e",
        (slice(112, 624), slice(480, 992)),
        ("11f68c29b851687e", "983b2f42034b5620"),
    ),
    "nuclei_tissue": (
        "c0152b1a260e71f9823d17f4fbb4bf7020d5dce62b4a12b3099c1c8e52a1c43a",
        None,
        ("f2da3485961fcca4", "8836013d11ce394b"),
    ),
}


def test_six_samples_are_shipped() -> None:
    assert samples.sample_names() == [
        "nuclei_1",
        "nuclei_2",
        "nuclei_3",
        "nuclei_brightfield",
        "nuclei_large",
        "nuclei_tissue",
    ]


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


def test_large_nuclei_sample_is_fluorescence_with_nuclei_over_1000_pixels() -> None:
    image, labels = samples.load_sample("nuclei_large")

    assert image.dtype == np.uint8 and image.shape == (360, 360)
    assert labels.dtype == np.uint16 and labels.shape == image.shape
    areas = np.bincount(labels.ravel())[1:]
    assert len(areas) == 17 and areas.min() > 0  # ids 1..17, none missing
    assert np.median(areas) == 2606
    assert image[labels > 0].mean() > 3 * image[labels == 0].mean()  # bright on dark


def test_brightfield_sample_has_dark_nuclei_on_a_bright_background() -> None:
    image, labels = samples.load_sample("nuclei_brightfield")

    assert image.dtype == np.uint8 and image.shape == (512, 512)
    assert labels.dtype == np.uint16 and labels.shape == image.shape
    assert np.array_equal(np.unique(labels), np.arange(28))  # background and 27 nuclei
    assert np.median(image[labels == 0]) > 200  # mostly bright, empty glass
    assert image[labels > 0].mean() < 0.5 * image[labels == 0].mean()


def test_tissue_sample_is_an_rgb_image_of_stained_nuclei() -> None:
    image, labels = samples.load_sample("nuclei_tissue")

    assert image.dtype == np.uint8 and image.shape == (256, 320, 3)
    assert labels.dtype == np.uint16 and labels.shape == (256, 320)
    assert np.array_equal(np.unique(labels), np.arange(26))  # background and 25 nuclei
    # Purple (hematoxylin) nuclei absorb green most: darker than the tissue, green most of all.
    darkening = image[labels == 0].mean(axis=0) - image[labels > 0].mean(axis=0)
    assert darkening.min() > 0 and darkening.argmax() == 1


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


@pytest.mark.parametrize("name", DSB2018_SAMPLES)
def test_dsb2018_samples_are_the_source_pixels(name) -> None:
    image, labels = samples.load_sample(name)

    assert (_sha256(image), _sha256(labels)) == DSB2018_SAMPLES[name][2]


@pytest.mark.skipif(not DSB2018_SOURCE.is_dir(), reason="the DSB 2018 source folder is absent")
@pytest.mark.parametrize("name", DSB2018_SAMPLES)
def test_dsb2018_samples_equal_the_source_files(name) -> None:
    image_id, crop, _ = DSB2018_SAMPLES[name]
    source_image = tifffile.imread(DSB2018_SOURCE / "images" / f"{image_id}.tif")
    source_labels = tifffile.imread(DSB2018_SOURCE / "labels" / f"{image_id}.tif")
    if crop is not None:
        source_image = source_image[crop]
        source_labels = relabel_sequential(source_labels[crop])[0]

    image, labels = samples.load_sample(name)

    np.testing.assert_array_equal(image, source_image)
    np.testing.assert_array_equal(labels, source_labels)
    assert image.dtype == source_image.dtype and labels.dtype == source_labels.dtype


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


@pytest.mark.parametrize(
    ("loader", "name", "shape"),
    [
        (samples.large_nuclei_sample, "nuclei_large", (360, 360)),
        (samples.brightfield_nuclei_sample, "nuclei_brightfield", (512, 512)),
        (samples.tissue_nuclei_sample, "nuclei_tissue", (256, 320)),
    ],
)
def test_dsb2018_sample_commands_return_napari_layer_data(loader, name, shape) -> None:
    (image, image_kwargs, image_type), (labels, labels_kwargs, labels_type) = loader()

    assert (image_type, labels_type) == ("image", "labels")
    assert image.shape[:2] == labels.shape == shape
    assert image_kwargs["name"] == name
    assert labels_kwargs["name"] == f"{name} ground truth"
    assert image_kwargs.get("rgb", False) is (name == "nuclei_tissue")
    image_id = DSB2018_SAMPLES[name][0]
    for kwargs in (image_kwargs, labels_kwargs):
        assert kwargs["metadata"]["image_id"] == image_id
        assert kwargs["metadata"]["source"].startswith("DSB 2018 stage-1 training set, BBBC038")


def test_samples_module_needs_no_gui() -> None:
    """Loading samples (demo, scripts, benchmarks) must not pull in napari or Qt."""
    code = (
        "import sys, napari_unet_lab.samples as samples; samples.load_sample('nuclei_1'); "
        "print(sorted({'napari', 'qtpy', 'PyQt5'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
