import os
import sys

import pytest


@pytest.fixture(scope="session", autouse=True)
def screen_for_qt() -> None:
    """Fail GUI tests with a hint when Linux has no screen, instead of Qt aborting the run."""
    has_screen = any(os.environ.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY"))
    if sys.platform == "linux" and not has_screen and "QT_QPA_PLATFORM" not in os.environ:
        pytest.fail(
            "The GUI tests open napari windows and need a screen: run `bash scripts/test.sh` "
            "or `xvfb-run -a .venv/bin/python -m pytest`.",
            pytrace=False,
        )


@pytest.fixture
def tiny_model_file(tmp_path):
    """A small random U-Net saved as a model file: fast enough for GUI tests."""
    import torch

    from napari_unet_lab.core.config import UNetConfig
    from napari_unet_lab.core.model.files import ModelInfo, save_model
    from napari_unet_lab.core.model.unet import UNet

    def make(in_channels=1, name="tiny", object_diameter=None):
        torch.manual_seed(0)
        config = UNetConfig(in_channels=in_channels, base_channels=4, depth=2)
        info = ModelInfo(
            config=config,
            class_names=["background", "object"],
            name=name,
            object_diameter=object_diameter,
        )
        return save_model(tmp_path / name, UNet(config), info)

    return make


@pytest.fixture
def errors(monkeypatch):
    """Error notifications the widgets show the user."""
    from napari_unet_lab.gui import background

    shown = []
    monkeypatch.setattr(background, "show_error", shown.append)
    return shown
