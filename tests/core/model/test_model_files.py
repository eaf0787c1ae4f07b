"""Model files: safetensors + JSON, never unpickled, damaged files refused clearly."""

import json

import pytest
import torch

from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.model.files import (
    ModelFileError,
    ModelInfo,
    builtin_models,
    check_compatible,
    load_model,
    read_model_info,
    save_model,
)
from napari_unet_lab.core.model.unet import UNet


def _saved(tmp_path, **config):
    torch.manual_seed(0)
    cfg = UNetConfig(base_channels=4, depth=2, **config)
    model = UNet(cfg)
    info = ModelInfo(
        config=cfg,
        class_names=["background", "nucleus"],
        name="test",
        metrics={"val_iou": 0.9},
        provenance={"data": "synthetic"},
    )
    return model, info, save_model(tmp_path / "test", model, info)


def test_round_trip_keeps_weights_and_description(tmp_path):
    model, info, path = _saved(tmp_path)
    assert path.name == "test.json" and (tmp_path / "test.safetensors").is_file()
    for given in (path, tmp_path / "test.safetensors", tmp_path / "test"):
        loaded, loaded_info = load_model(given)
        assert loaded_info == info
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value)
    description = json.loads(path.read_text())
    assert description["architecture"]["base_channels"] == 4
    assert description["class_names"] == ["background", "nucleus"]


def test_never_overwrites_without_asking(tmp_path):
    model, info, path = _saved(tmp_path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        save_model(path, model, info)
    assert path.read_bytes() == before
    save_model(path, model, info, overwrite=True)


def test_damaged_weights_are_refused(tmp_path):
    _, _, path = _saved(tmp_path)
    weights = tmp_path / "test.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="damaged"):
        load_model(path)


def test_truncated_weights_without_checksum_are_refused(tmp_path):
    _, _, path = _saved(tmp_path)
    description = json.loads(path.read_text())
    del description["weights"]["sha256"]
    path.write_text(json.dumps(description))
    weights = tmp_path / "test.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(ModelFileError, match="not a readable safetensors file"):
        load_model(path)


def test_pickle_is_never_loaded(tmp_path):
    """A torch pickle renamed to .safetensors is refused, not executed."""
    _, _, path = _saved(tmp_path)
    description = json.loads(path.read_text())
    del description["weights"]["sha256"]
    path.write_text(json.dumps(description))
    torch.save({"x": torch.zeros(1)}, tmp_path / "test.safetensors")
    with pytest.raises(ModelFileError):
        load_model(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "not valid JSON"), ('{"format": "other"}', "not a napari-unet-lab model")],
)
def test_bad_descriptions_are_refused(tmp_path, content, message):
    (tmp_path / "bad.json").write_text(content)
    with pytest.raises(ModelFileError, match=message):
        read_model_info(tmp_path / "bad.json")


def test_weights_that_do_not_fit_the_architecture(tmp_path):
    _, _, path = _saved(tmp_path)
    description = json.loads(path.read_text())
    description["architecture"]["base_channels"] = 8
    del description["weights"]["sha256"]
    path.write_text(json.dumps(description))
    with pytest.raises(ModelFileError, match="do not fit"):
        load_model(path)


def test_missing_weights(tmp_path):
    _, _, path = _saved(tmp_path)
    (tmp_path / "test.safetensors").unlink()
    with pytest.raises(ModelFileError, match="missing"):
        load_model(path)


def test_other_channels_or_classes_are_refused(tmp_path):
    _, info, _ = _saved(tmp_path)
    check_compatible(info, in_channels=1, class_names=["background", "nucleus"])
    with pytest.raises(ModelFileError, match="1 channel"):
        check_compatible(info, in_channels=3)
    with pytest.raises(ModelFileError, match="predicts"):
        check_compatible(info, class_names=["background", "cell", "membrane"])


def test_builtin_models_load_and_predict():
    models = builtin_models()
    assert "nuclei" in models  # shipped with the package, nothing downloaded
    for path in models.values():
        model, info = load_model(path)
        assert info.class_names[0] == "background"
        with torch.no_grad():
            size = model.min_input_size
            assert model(torch.zeros(1, info.config.in_channels, size, size)).isfinite().all()
