"""How to train: for how many minutes (or steps), and the advanced settings behind a checkbox."""

from __future__ import annotations

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, SpinBox

from ...core.config import AugmentationConfig, TargetConfig
from ...core.device import available_devices
from ...core.model.files import ModelInfo
from ...core.train import LOSSES, TrainingSettings
from ...core.train.settings import (
    DEFAULT_MINUTES,
    DEFAULT_PATIENCE,
    FINE_TUNING_RATE,
    NEW_NETWORK_RATE,
    automatic_learning_rate,
)
from ..docks import status_line

MINUTES, STEPS = "minutes", "steps"  # what "Train for" counts


def budget_text(train_for: str, amount: float, patience: int) -> str:
    """Say in one line when training stops, and why minutes are the default."""
    if train_for == STEPS:
        return f"Stops after {amount:g} steps; steps take different times on every machine."
    sooner = ", or sooner when validation stops improving" if patience else ""
    return f"Stops after {amount:g} minutes{sooner}; steps take different times on every machine."


class TrainingOptions(Container):
    """How long to train, then (shown on request) everything else a training run takes.

    Training lasts a number of minutes by default; setting the steps (as a
    script may) switches to a step count, setting the minutes switches back.
    """

    def __init__(self):
        defaults, targets, augmentation = TrainingSettings(), TargetConfig(), AugmentationConfig()
        self.train_for = ComboBox(label="Train for", choices=[MINUTES, STEPS], value=MINUTES)
        self.minutes = FloatSpinBox(
            label="Minutes", value=DEFAULT_MINUTES, min=0.05, max=100_000.0, step=0.5
        )
        self.steps = SpinBox(label="Steps", value=400, min=1, max=1_000_000, visible=False)
        self.budget = status_line()  # one line: when training stops
        self.show_advanced = CheckBox(text="Advanced settings", value=False)
        self.learning_rate = FloatSpinBox(
            label="Learning rate", value=0.0, min=0.0, max=1.0, step=1e-4
        )
        self.loss = ComboBox(label="Loss", choices=list(LOSSES), value=defaults.loss)
        self.batch_size = SpinBox(label="Patches per step", value=4, min=1, max=256)
        self.patch_size = SpinBox(label="Patch size (px)", value=252, min=32, max=2048, step=4)
        self.elastic = CheckBox(text="Elastic deformation", value=True)
        self.zoom = FloatSpinBox(
            label="Random zoom", value=augmentation.zoom, min=0.0, max=3.0, step=0.05
        )
        self.invert = FloatSpinBox(
            label="Inverted contrast (chance)", value=augmentation.invert, max=1.0, step=0.05
        )
        self.freeze_encoder = CheckBox(text="Freeze the encoder", value=False)
        self.w0 = FloatSpinBox(label="Border weight w0", value=targets.w0, min=0.0, max=100.0)
        self.sigma = FloatSpinBox(
            label="Border width σ (px)", value=targets.sigma, min=0.5, max=50.0
        )
        self.validate_every = SpinBox(label="Validate every (steps)", value=50, min=1, max=10**6)
        self.patience = SpinBox(
            label="Stop after no gain (validations)", value=DEFAULT_PATIENCE, min=0, max=1000
        )
        self.preview_every = SpinBox(label="Preview every (steps)", value=10, min=1, max=10**6)
        self.device = ComboBox(label="Device", choices=available_devices(), value="auto")
        self.seed = SpinBox(label="Seed", value=0, min=0, max=2**31 - 1)
        self._advanced = (
            self.learning_rate, self.loss, self.batch_size, self.patch_size, self.elastic,
            self.zoom, self.invert, self.freeze_encoder, self.w0, self.sigma,
            self.validate_every, self.patience, self.preview_every, self.device, self.seed,
        )  # fmt: skip
        super().__init__(
            widgets=[self.train_for, self.minutes, self.steps, self.budget, self.show_advanced,
                     *self._advanced],
            labels=True, label="",
        )  # fmt: skip
        self.margins = (0, 0, 0, 0)
        for widget in self._advanced:
            widget.visible = False
        self.learning_rate.tooltip = (
            f"0: automatic ({NEW_NETWORK_RATE:g} for a new network, {FINE_TUNING_RATE:g} "
            "to fine-tune)."
        )
        self.freeze_encoder.tooltip = "Train only the decoder: faster, keeps the base features."
        self.zoom.tooltip = (
            "Zoom each patch in or out at random by up to 1 + this (0.25: from 1/1.25 to 1.25 "
            "times), so the model meets more object sizes. 0: off."
        )
        self.invert.tooltip = (
            "Chance that a patch's contrast is inverted, dark objects on a bright background "
            "(as in brightfield). 0: off."
        )
        self.show_advanced.changed.connect(self._toggle_advanced)
        self.train_for.changed.connect(self._show_budget)
        self.minutes.changed.connect(lambda: self._count(MINUTES))
        self.steps.changed.connect(lambda: self._count(STEPS))
        self.patience.changed.connect(self._show_budget)
        self._show_budget()

    def _count(self, train_for: str) -> None:
        """Count what was just set: minutes or steps."""
        if self.train_for.value != train_for:
            self.train_for.value = train_for  # shows the budget
        else:
            self._show_budget()

    def _show_budget(self) -> None:
        by_steps = self.train_for.value == STEPS
        self.minutes.visible, self.steps.visible = not by_steps, by_steps
        amount = self.steps.value if by_steps else self.minutes.value
        self.budget.value = budget_text(self.train_for.value, amount, self.patience.value)

    def _toggle_advanced(self, shown: bool) -> None:
        for widget in self._advanced:
            widget.visible = shown

    def training_settings(self, fine_tuning: bool, base: ModelInfo | None) -> TrainingSettings:
        """Return the training settings chosen; a model file's intensity mapping is kept."""
        rate = self.learning_rate.value or automatic_learning_rate(fine_tuning)
        extra = {"normalization": base.normalization} if base is not None else {}
        by_steps = self.train_for.value == STEPS
        return TrainingSettings(
            # with minutes, the core's step count stands unused: as the command line stores it
            steps=self.steps.value if by_steps else TrainingSettings().steps,
            minutes=None if by_steps else self.minutes.value,
            batch_size=self.batch_size.value,
            patch_size=self.patch_size.value,
            learning_rate=rate,
            loss=self.loss.value,
            augmentation=AugmentationConfig(
                elastic=self.elastic.value, zoom=self.zoom.value, invert=self.invert.value
            ),
            validate_every=self.validate_every.value,
            patience=self.patience.value,
            freeze_encoder=self.freeze_encoder.value,
            **extra,
        )

    def targets(self) -> TargetConfig:
        """Return how annotations become targets: the border weights chosen."""
        return TargetConfig(w0=self.w0.value, sigma=self.sigma.value)
