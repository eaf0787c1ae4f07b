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
