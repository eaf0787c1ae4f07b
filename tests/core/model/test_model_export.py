"""Exported models compute what the network computes, and bioimage.io packages validate offline."""

from __future__ import annotations

import io
import warnings
import zipfile

import numpy as np
import pytest
import torch
import yaml

from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.model.builtin import builtin_models
from napari_unet_lab.core.model.export import (
    MissingPackageError,
    example_input,
    export_bioimageio,
    export_onnx,
    export_torchscript,
    exportable_network,
    require,
    smallest_input_size,
    validate_bioimageio,
)
from napari_unet_lab.core.model.export import bioimageio as bioimageio_export
from napari_unet_lab.core.model.files import ModelInfo, load_model
from napari_unet_lab.core.model.unet import UNet
from napari_unet_lab.samples import load_sample

pytest.importorskip("bioimageio.spec", reason="install the export extra")
onnxruntime = pytest.importorskip("onnxruntime", reason="install the export extra")


def tiny_model(seed: int = 0, **config) -> tuple[UNet, ModelInfo]:
    """A small U-Net whose batch norm statistics are not the identity, so folding matters."""
    torch.manual_seed(seed)
    cfg = UNetConfig(base_channels=4, depth=2, **config)
    model = UNet(cfg)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    info = ModelInfo(config=cfg, class_names=["background", "object"], name="tiny")
    return model.eval(), info


def load_torchscript(source) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():  # torch.jit is deprecated; TorchScript files are not
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(source)


def scores(model: UNet, inputs: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(inputs).numpy()


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    """The tiny model exported once to ONNX (torch's exporter takes seconds)."""
    model, info = tiny_model()
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "tiny.onnx")
    return model, info, path


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_accepted_sizes_are_the_smallest_plus_whole_steps(depth, padding) -> None:
    """The bioimage.io axes say `min + k * step`; that must be exactly what the network takes."""
    model = UNet(UNetConfig(depth=depth, padding=padding, base_channels=1))
    smallest, step = smallest_input_size(model), model.size_multiple
    sizes = range(smallest, smallest + 6 * step)
    assert [s for s in sizes if model.is_valid_input_size(s)] == list(sizes[::step])
    if padding == "valid":
        assert smallest == model.min_input_size
    else:  # the smallest output with pixels that never saw the zero padding
        assert model.output_size(smallest) > 2 * model.halo


def test_exportable_network_uses_plain_convolutions_and_agrees() -> None:
    model, _ = tiny_model()
    network = exportable_network(model)
    kinds = {type(m) for m in network.modules() if isinstance(m, torch.nn.Conv2d)}
    assert kinds == {torch.nn.Conv2d}
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())
    inputs = example_input(model)
    np.testing.assert_allclose(scores(network, inputs), scores(model, inputs), atol=1e-5)


def test_torchscript_matches_the_network_at_another_size_and_batch(tmp_path) -> None:
    model, _ = tiny_model()
    path = export_torchscript(model, tmp_path / "tiny.pt")
    loaded = load_torchscript(path)
    smallest, step = smallest_input_size(model), model.size_multiple
    inputs = example_input(model, (smallest + 4 * step, smallest + 7 * step), batch=3, seed=5)
    with torch.no_grad():
        found = loaded(inputs).numpy()
    np.testing.assert_allclose(found, scores(model, inputs), atol=1e-5)


def test_exports_never_overwrite_without_asking(tmp_path) -> None:
    model, _ = tiny_model()
    path = export_torchscript(model, tmp_path / "tiny.pt")
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        export_torchscript(tiny_model(seed=1)[0], path)
    assert path.read_bytes() == before
    export_torchscript(tiny_model(seed=1)[0], path, overwrite=True)
    assert path.read_bytes() != before


def test_onnx_matches_torch_in_onnxruntime(onnx_file) -> None:
    model, _, path = onnx_file
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    smallest, step = smallest_input_size(model), model.size_multiple
    for shape, batch in [((smallest, smallest), 1), ((smallest + 9 * step, smallest + step), 3)]:
        inputs = example_input(model, shape, batch=batch, seed=7)
        (found,) = session.run(None, {"input": inputs.numpy()})
        np.testing.assert_allclose(found, scores(model, inputs), atol=1e-4)


def read_package(path) -> tuple[dict, dict[str, bytes]]:
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    return yaml.safe_load(files["rdf.yaml"]), files


def load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data))


def test_package_of_a_trained_model_validates_offline(tmp_path, monkeypatch, onnx_file) -> None:
    """A package with both weight formats validates without any network access."""
    model, info, onnx_path = onnx_file
    # the ONNX export is tested above; reuse it rather than export again
    monkeypatch.setattr(bioimageio_export, "onnx_bytes", lambda _: onnx_path.read_bytes())
    httpx = pytest.importorskip("httpx")

    def no_network(*args, **kwargs):
        raise AssertionError("validation tried to reach the network")

    monkeypatch.setattr(httpx, "request", no_network)
    monkeypatch.setattr(httpx, "stream", no_network)
    image = load_sample("nuclei_1")[0][:120, :150]

    package = export_bioimageio(tmp_path / "tiny.zip", model, info, image, authors=["Ada"])

    assert package.status in ("valid-format", "passed")
    assert validate_bioimageio(package.path)[0] == package.status
    rdf, files = read_package(package.path)
    assert set(rdf["weights"]) == {"torchscript", "onnx"}
    assert rdf["weights"]["onnx"]["parent"] == "torchscript"
    # the ONNX weights turn the test input, preprocessed as stated, into the test output
    test_input = load_npy(files["test_input.npy"])
    test_output = load_npy(files["test_output.npy"])
    low, high = np.percentile(test_input, [1.0, 99.8])
    normalised = ((test_input - low) / (high - low + 1e-6)).astype(np.float32)
    session = onnxruntime.InferenceSession(files["weights.onnx"])
    (logits,) = session.run(None, {"input": normalised})
    np.testing.assert_allclose(torch.softmax(torch.from_numpy(logits), 1), test_output, atol=1e-4)
    assert test_input.shape[-1] - test_output.shape[-1] == 2 * model.output_offset


def test_package_of_the_builtin_model_records_what_other_tools_need(tmp_path) -> None:
    model, info = load_model(builtin_models()["nuclei"])
    image = load_sample("nuclei_1")[0]

    package = export_bioimageio(
        tmp_path / "nuclei.zip", model, info, image, weights=["torchscript"], authors=["X"]
    )

    assert package.status in ("valid-format", "passed")
    rdf, files = read_package(package.path)
    (tensor,) = rdf["inputs"]
    y_in = next(axis for axis in tensor["axes"] if axis.get("id") == "y")
    assert y_in["size"] == {"min": model.min_input_size, "step": model.size_multiple}
    y_out = next(axis for axis in rdf["outputs"][0]["axes"] if axis.get("id") == "y")
    assert y_out["size"]["offset"] == -2 * model.halo
    scale_range = next(p for p in tensor["preprocessing"] if p["id"] == "scale_range")
    assert scale_range["kwargs"]["min_percentile"] == info.normalization["low"]
    assert scale_range["kwargs"]["max_percentile"] == info.normalization["high"]
    assert {"10.1007/978-3-319-24574-4_28", "10.1002/cyto.a.23863"} <= {
        entry["doi"] for entry in rdf["cite"]
    }
    assert rdf["outputs"][0]["axes"][1]["channel_names"] == info.class_names
    assert rdf["config"]["napari-unet-lab"]["normalization"] == info.normalization
    assert b"Validation" in files["README.md"]
    # the TorchScript weights reproduce the test output
    weights = load_torchscript(io.BytesIO(files["weights_torchscript.pt"]))
    test_input = load_npy(files["test_input.npy"])
    low, high = np.percentile(test_input, [1.0, 99.8])
    with torch.no_grad():
        logits = weights(torch.from_numpy((test_input - low) / (high - low + 1e-6)).float())
    np.testing.assert_allclose(
        torch.softmax(logits, 1).numpy(), load_npy(files["test_output.npy"]), atol=1e-4
    )


def test_same_padding_package_states_the_halo(tmp_path) -> None:
    model, info = tiny_model(padding="same")
    image = np.random.default_rng(0).integers(0, 4000, (80, 90)).astype(np.uint16)

    package = export_bioimageio(tmp_path / "same.zip", model, info, image, weights=["torchscript"])

    assert package.status in ("valid-format", "passed")
    rdf, _ = read_package(package.path)
    y_out = next(axis for axis in rdf["outputs"][0]["axes"] if axis.get("id") == "y")
    assert y_out["halo"] == model.halo and y_out["size"]["offset"] == 0


def test_a_test_image_too_small_is_refused_clearly(tmp_path) -> None:
    model, info = tiny_model()
    with pytest.raises(ValueError, match="smaller than"):
        export_bioimageio(tmp_path / "x.zip", model, info, np.ones((20, 20)))
    assert not (tmp_path / "x.zip").exists()


def test_a_missing_optional_package_names_the_extra() -> None:
    with pytest.raises(MissingPackageError, match=r"napari-unet-lab\[export\]"):
        require("no_such_package_for_napari_unet_lab", "Testing")
