"""The one model chooser of the dock widgets: a built-in model, or a model file picked on disk."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from magicgui.widgets import ComboBox, Container, FileEdit

from ..core.model.builtin import DEFAULT_MODEL, RGB_MODEL, builtin_model_for, builtin_models
from ..core.model.files import ModelInfo, load_model, read_model_info
from ..core.model.unet import UNet
from .docks import status_line
from .messages import sentence

MODEL_FROM_FILE = "model file…"
MODEL_FILE_FILTER = "*.json *.safetensors"

Choices = Sequence[tuple[str, Any]]


class ModelChooser(Container):
    """Choose a model: one shipped with the plugin, or a model file chosen in a file dialog.

    A chosen file's description is read once, when it is chosen, so adding or
    removing layers never touches the disk. A file that cannot be used says why
    in a line under the chooser instead of raising.

    Parameters
    ----------
    label : str
        What the choice is called in the dock ("Model", "Start from").
    first : callable, optional
        Returns (text, value) choices listed before the built-in models, asked
        again whenever the choices are refreshed ("the network trained here").
    last : sequence of (text, value), optional
        Choices listed after the built-in models, before "model file…".
    own_labels : bool
        True: the chooser labels its rows itself ("Start from", "Model file"),
        for a group without a label column. False: `label` goes in the label
        column of the form holding it, which saves a dock a column's width.
    """

    def __init__(
        self,
        label: str = "Model",
        first: Callable[[], Choices] | None = None,
        last: Choices = (),
        own_labels: bool = True,
    ):
        self._first = first or (lambda: [])
        self._last = list(last)
        # read once: layer events refresh the choices, and must not read files each time
        self._builtin_paths = builtin_models()
        self._builtin = [(f"{name} (built-in)", path) for name, path in self._builtin_paths.items()]
        self._info: ModelInfo | None = None
        self.choice = ComboBox(label=label, choices=self._choices)
        self.file = FileEdit(label="Model file", filter=MODEL_FILE_FILTER, visible=False)
        self.problem = status_line()
        self.problem.visible = False
        # connected first, so the chooser's `changed` finds `info` up to date
        self.choice.changed.connect(self._chosen)
        self.file.changed.connect(self._chosen)
        super().__init__(
            widgets=[self.choice, self.file, self.problem],
            labels=own_labels,
            label="" if own_labels else label,
        )
        self.margins = (0, 0, 0, 0)
        self._chosen()

    def _choices(self, _widget=None) -> list[tuple[str, Any]]:
        return [*self._first(), *self._builtin, *self._last, (MODEL_FROM_FILE, MODEL_FROM_FILE)]

    def _chosen(self, _value=None) -> None:
        self.file.visible = self.choice.value == MODEL_FROM_FILE
        self._info, problem = None, ""
        path = self.path
        if path is not None:
            try:
                self._info = read_model_info(path)
            except (ValueError, OSError) as error:  # ModelFileError is a ValueError
                problem = str(error)
        self.problem.value = sentence(problem)
        self.problem.visible = bool(problem)

    @property
    def path(self) -> Path | None:
        """The model file chosen (a built-in one or the user's); None if none is."""
        value = self.choice.value
        if value == MODEL_FROM_FILE:
            picked = self.file.value
            # FileEdit holds Path(".") until a file is picked
            return Path(picked) if picked is not None and Path(picked).is_file() else None
        return value if isinstance(value, Path) else None  # extras are no files

    @property
    def info(self) -> ModelInfo | None:
        """What the chosen model file says about its model; None if there is none to use."""
        return self._info

    def suit_image(self, image: Any, rgb: bool) -> None:
        """Offer the built-in model suited to the image, while a built-in default is chosen.

        Choosing stained tissue (an RGB layer, mostly light) swaps the default model for
        the one that takes colours (`builtin_model_for`), and any other layer swaps it
        back; a model the user chose otherwise (another built-in one, a file) stays.
        """
        defaults = {self._builtin_paths.get(name) for name in (DEFAULT_MODEL, RGB_MODEL)}
        if self.choice.value not in defaults - {None}:
            return
        suited = self._builtin_paths.get(builtin_model_for(image, rgb, self._builtin_paths) or "")
        if suited is not None:
            self.choice.value = suited

    def choose_file(self, path: str | Path) -> None:
        """Choose a model file, as picking "model file…" and then the file does."""
        self.choice.value = MODEL_FROM_FILE
        self.file.value = path

    def load(self) -> tuple[UNet, ModelInfo]:
        """Load the chosen model, fresh from its file.

        Raises
        ------
        ValueError
            With a message for the user: no model file chosen, or a
            `ModelFileError` saying why the file cannot be used.
        """
        path = self.path
        if path is None:
            raise ValueError("choose a model file (.json or .safetensors)")
        return load_model(path)
