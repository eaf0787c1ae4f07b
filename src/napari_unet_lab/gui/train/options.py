"""How to train: the number of steps, and the advanced settings behind a checkbox."""

from __future__ import annotations

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, SpinBox

from ...core.config import AugmentationConfig, TargetConfig
from ...core.device import available_devices
from ...core.model.files import ModelInfo
from ...core.train import LOSSES, TrainingSettings

NEW_NETWORK_RATE = 1e-3  # learning rates when left at 0 (automatic)
FINE_TUNING_RATE = 5e-4


class TrainingOptions(Container):
    """Steps to train, then (shown on request) everything else a training run takes."""

    def __init__(self):
        defaults, targets = TrainingSettings(), TargetConfig()
        self.steps = SpinBox(label="Steps", value=400, min=1, max=1_000_000)
        self.show_advanced = CheckBox(text="Advanced settings", value=False)
        self.learning_rate = FloatSpinBox(
            label="Learning rate", value=0.0, min=0.0, max=1.0, step=1e-4
        )
        self.loss = ComboBox(label="Loss", choices=list(LOSSES), value=defaults.loss)
        self.batch_size = SpinBox(label="Patches per step", value=4, min=1, max=256)
        self.patch_size = SpinBox(label="Patch size (px)", value=252, min=32, max=2048, step=4)
        self.elastic = CheckBox(text="Elastic deformation", value=True)
        self.freeze_encoder = CheckBox(text="Freeze the encoder", value=False)
        self.w0 = FloatSpinBox(label="Border weight w0", value=targets.w0, min=0.0, max=100.0)
        self.sigma = FloatSpinBox(
            label="Border width σ (px)", value=targets.sigma, min=0.5, max=50.0
        )
        self.validate_every = SpinBox(label="Validate every (steps)", value=50, min=1, max=10**6)
        self.patience = SpinBox(label="Stop after no gain (validations)", value=0, min=0, max=1000)
        self.preview_every = SpinBox(label="Preview every (steps)", value=10, min=1, max=10**6)
        self.device = ComboBox(label="Device", choices=available_devices(), value="auto")
        self.seed = SpinBox(label="Seed", value=0, min=0, max=2**31 - 1)
        self._advanced = (
            self.learning_rate, self.loss, self.batch_size, self.patch_size, self.elastic,
            self.freeze_encoder, self.w0, self.sigma, self.validate_every, self.patience,
            self.preview_every, self.device, self.seed,
        )  # fmt: skip
        super().__init__(
            widgets=[self.steps, self.show_advanced, *self._advanced], labels=True, label=""
        )
        self.margins = (0, 0, 0, 0)
        for widget in self._advanced:
            widget.visible = False
        self.learning_rate.tooltip = (
            f"0: automatic ({NEW_NETWORK_RATE:g} for a new network, {FINE_TUNING_RATE:g} "
            "to fine-tune)."
        )
        self.freeze_encoder.tooltip = "Train only the decoder: faster, keeps the base features."
        self.show_advanced.changed.connect(self._toggle_advanced)

    def _toggle_advanced(self, shown: bool) -> None:
        for widget in self._advanced:
            widget.visible = shown

    def training_settings(self, fine_tuning: bool, base: ModelInfo | None) -> TrainingSettings:
        """Return the training settings chosen; a model file's intensity mapping is kept."""
        rate = self.learning_rate.value or (FINE_TUNING_RATE if fine_tuning else NEW_NETWORK_RATE)
        extra = {"normalization": base.normalization} if base is not None else {}
        return TrainingSettings(
            steps=self.steps.value,
            batch_size=self.batch_size.value,
            patch_size=self.patch_size.value,
            learning_rate=rate,
            loss=self.loss.value,
            augmentation=AugmentationConfig(elastic=self.elastic.value),
            validate_every=self.validate_every.value,
            patience=self.patience.value,
            freeze_encoder=self.freeze_encoder.value,
            **extra,
        )

    def targets(self) -> TargetConfig:
        """Return how annotations become targets: the border weights chosen."""
        return TargetConfig(w0=self.w0.value, sigma=self.sigma.value)
