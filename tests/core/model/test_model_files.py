"""Model files: safetensors + JSON, never unpickled, damaged files refused clearly."""

import errno
import hashlib
import io
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as safetensors_save

from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.images import DEFAULT_NORMALIZATION
from napari_unet_lab.core.model.builtin import builtin_models
from napari_unet_lab.core.model.files import (
    ModelFileError,
    ModelInfo,
    check_compatible,
    check_model_destination,
    load_model,
    read_model_info,
    save_model,
)
from napari_unet_lab.core.model.unet import UNet

DATA = Path(__file__).parent / "data"


def _saved(tmp_path, **config):
    tmp_path.mkdir(parents=True, exist_ok=True)
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


# ------------------------------------------------------ the JSON is checked first
def _description_with(tmp_path, change):
    _, _, path = _saved(tmp_path)
    description = json.loads(path.read_text())
    change(description)
    path.write_text(json.dumps(description))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["weights"].update(file="../x"), "weights.file must be the name of a"),
        (lambda d: d["weights"].update(file="/etc/passwd"), 'same folder, not "/etc/passwd"'),
        (lambda d: d["weights"].update(file="sub/test.safetensors"), "same folder"),
        (lambda d: d["weights"].update(file="test.pt"), "name of a .safetensors file"),
        (lambda d: d["weights"].update(file=7), "same folder, not 7"),
        (lambda d: d.update(weights="test.safetensors"), "weights must be an object"),
        (lambda d: d.update(weights=None), "weights must be an object naming the weights file"),
        (lambda d: d["weights"].update(sha256="abc"), "64 hexadecimal digits"),
        (lambda d: d.update(format_version="abc"), "format_version must be a whole number"),
        (lambda d: d.update(format_version=2), "newer napari-unet-lab; please update"),
        (lambda d: d["normalization"].pop("low"), "normalization.low is missing"),
        (lambda d: d["normalization"].update(method="zscore"), "normalization.method must be"),
        (lambda d: d["normalization"].update(low=50, high=20), "0 <= low < high <= 100"),
        (lambda d: d["architecture"].update(base_channels=1e6), "from 1 to 512, not 1000000.0"),
        (lambda d: d["architecture"].update(base_channels=10**6), "from 1 to 512"),
        (lambda d: d["architecture"].update(depth=9), "architecture.depth must be"),
        (lambda d: d["architecture"].update(in_channels=0), "architecture.in_channels must be"),
        (lambda d: d["architecture"].update(n_classes=True), "n_classes must be a whole number"),
        (lambda d: d["architecture"].update(base_channels=512, depth=6), "too large"),
        (lambda d: d["architecture"].update(padding=1), "padding must be valid or same"),
        (lambda d: d["architecture"].update(kernel=5), "unknown settings: kernel"),
        (lambda d: d.pop("architecture"), "architecture is missing"),
        (lambda d: d.update(class_names="background"), "class_names must be a list"),
        (lambda d: d["class_names"].append("cell"), "3 names for 2 classes"),
        (lambda d: d.update(name=["x"]), "name must be text"),
        (lambda d: d.update(metrics=[1, 2]), "metrics must be an object"),
        (lambda d: d.update(training={"patch_size": -3}), "training.patch_size must be"),
    ],
)
def test_unusable_descriptions_are_refused_in_plain_words(tmp_path, change, message):
    """Each of these gave a traceback (or read another file) before the schema check."""
    path = _description_with(tmp_path, change)
    for read in (read_model_info, load_model):
        with pytest.raises(ModelFileError, match=message) as refused:
            read(path)
        assert str(refused.value).startswith(
            "the model file test.json is not a valid model description: "
        )


def test_a_swapped_pickle_is_refused_and_never_run(tmp_path):
    """Even with a matching checksum, a pickle is parsed as safetensors and refused."""
    _, _, path = _saved(tmp_path)
    marker = tmp_path / "pickle-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for data in (pickle.dumps(Payload()), _torch_saved({"x": Payload()})):
        (tmp_path / "test.safetensors").write_bytes(data)
        description = json.loads(path.read_text())
        description["weights"]["sha256"] = hashlib.sha256(data).hexdigest()
        path.write_text(json.dumps(description))
        with pytest.raises(ModelFileError, match="not a readable safetensors file"):
            load_model(path)
    assert not marker.exists()


def _torch_saved(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def test_weights_that_are_not_numbers_are_refused(tmp_path):
    model, info, path = _saved(tmp_path)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["encoders.0.0.weight"].view(-1)[0] = float("nan")
    data = safetensors_save(state)
    (tmp_path / "test.safetensors").write_bytes(data)
    description = json.loads(path.read_text())
    description["weights"]["sha256"] = hashlib.sha256(data).hexdigest()
    path.write_text(json.dumps(description))
    with pytest.raises(
        ModelFileError, match="encoders.0.0.weight hold values that are not numbers"
    ):
        load_model(path)


# ------------------------------------------------------- model files of before still load
def test_the_first_released_description_still_loads(tmp_path):
    """The built-in model's JSON as first released (older training record) still loads."""
    builtin = builtin_models()["nuclei"]
    weights = builtin.with_suffix(".safetensors").read_bytes()
    old = json.loads((DATA / "nuclei_first_release.json").read_text())
    old["weights"]["sha256"] = hashlib.sha256(weights).hexdigest()  # today's weights
    (tmp_path / "old.json").write_text(json.dumps(old, indent=2))
    (tmp_path / "nuclei.safetensors").write_bytes(weights)

    model, info = load_model(tmp_path / "old.json")

    assert info.name == "nuclei" and info.class_names == ["background", "nucleus"]
    assert info.training["settings"]["flips_and_rotations"] is True  # the old layout, kept
    reference, _ = load_model(builtin)
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)


def test_an_early_description_without_optional_fields_loads(tmp_path):
    """No format_version, weights, normalisation or records: the defaults apply."""
    model, _, path = _saved(tmp_path)
    path.write_text(
        json.dumps(
            {
                "format": "napari-unet-lab model",
                "architecture": model.config.to_dict(),
                "class_names": ["background", "nucleus"],
            }
        )
    )
    loaded, info = load_model(path)
    assert info.name == "test" and info.normalization == DEFAULT_NORMALIZATION
    assert info.training == info.provenance == info.metrics == {}
    assert torch.equal(loaded.state_dict()["head.weight"], model.state_dict()["head.weight"])


# ------------------------------------------------------ saved whole, or not at all
def test_saving_to_a_folder_says_so_and_writes_nothing(tmp_path):
    model, info, _ = _saved(tmp_path / "a")
    folder = tmp_path / "save"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match=r"that is a folder; give the model a name in it"):
        save_model(folder, model, info)
    assert not (tmp_path / "save.json").exists() and not (tmp_path / "save.safetensors").exists()
    assert list(folder.iterdir()) == []


def test_saving_into_a_missing_folder_says_so(tmp_path):
    model, info, _ = _saved(tmp_path)
    with pytest.raises(FileNotFoundError, match="the folder .*nowhere does not exist"):
        save_model(tmp_path / "nowhere" / "model", model, info)


def _fail_on_json(real, error):
    def fail(source, target, *args, **kwargs):
        if str(target).endswith(".json"):
            raise error
        return real(source, target, *args, **kwargs)

    return fail


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_full_disk_while_writing_the_json_saves_nothing(tmp_path, monkeypatch, overwrite):
    model, info, path = _saved(tmp_path)
    if not overwrite:
        path = tmp_path / "new.json"
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_fsync, calls = os.fsync, []

    def fsync_then_disk_full(descriptor):
        calls.append(descriptor)
        if len(calls) == 2:  # the JSON, written after the weights
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync_then_disk_full)
    with pytest.raises(
        OSError, match="could not save the model .*: No space left on device; nothing"
    ):
        save_model(path, UNet(info.config), info, overwrite=overwrite)
    monkeypatch.undo()

    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temporaries
    save_model(path, model, info, overwrite=overwrite)  # the name is not blocked
    load_model(path)


@pytest.mark.parametrize("overwrite", [False, True])
def test_failing_to_publish_the_json_takes_the_weights_back(tmp_path, monkeypatch, overwrite):
    model, info, path = _saved(tmp_path)
    if not overwrite:
        path = tmp_path / "new.json"
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    error = OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(os, "link", _fail_on_json(os.link, error))
    monkeypatch.setattr(os, "replace", _fail_on_json(os.replace, error))
    torch.manual_seed(1)
    with pytest.raises(OSError, match="nothing was saved"):
        save_model(path, UNet(info.config), info, overwrite=overwrite)
    monkeypatch.undo()

    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    loaded, _ = load_model(tmp_path / "test.json")  # the old model is whole
    assert torch.equal(loaded.state_dict()["head.weight"], model.state_dict()["head.weight"])


@pytest.mark.parametrize("half", ["test.safetensors", "test.json"])
def test_half_a_model_does_not_block_its_name(tmp_path, half):
    """What an interrupted save (or a deleted file) leaves is replaced by the next save."""
    model, info, path = _saved(tmp_path)
    other = {"test.safetensors": "test.json", "test.json": "test.safetensors"}[half]
    (tmp_path / other).unlink()
    assert check_model_destination(path) == (path, tmp_path / "test.safetensors")

    assert save_model(path, model, info) == path
    load_model(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test.json", "test.safetensors"]


def test_another_programs_file_is_never_replaced_without_asking(tmp_path):
    model, info, path = _saved(tmp_path)
    (tmp_path / "test.json").unlink()
    (tmp_path / "test.safetensors").write_bytes(safetensors_save({"x": torch.zeros(2)}))
    with pytest.raises(FileExistsError, match="is not part of a napari-unet-lab model"):
        save_model(path, model, info)
    with pytest.raises(
        FileExistsError, match="a model already exists at .*b.test.json; choose another name"
    ):
        save_model(_saved(tmp_path / "b")[2], model, info)


def test_a_model_that_would_not_load_is_not_saved(tmp_path):
    model, info, _ = _saved(tmp_path)
    info.normalization = {"method": "fixed", "low": 1.0}
    with pytest.raises(ModelFileError, match="cannot be saved: normalization.high is missing"):
        save_model(tmp_path / "bad", model, info)
    assert not list(tmp_path.glob("bad*"))


def test_messages_never_start_with_a_file_name(tmp_path):
    """Widgets capitalise the first letter; a file name there would read 'Test.json'."""
    _, _, path = _saved(tmp_path)
    (tmp_path / "test.safetensors").unlink()
    problems = []
    for attempt in (
        lambda: load_model(path),
        lambda: read_model_info(tmp_path / "missing.json"),
        lambda: (path.write_text("{"), load_model(path)),
    ):
        with pytest.raises(ModelFileError) as refused:
            attempt()
        problems.append(str(refused.value))
    assert all(not p.startswith(("test", "missing")) for p in problems), problems
