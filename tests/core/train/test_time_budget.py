"""Training for a time budget, and a time-left estimate that holds still.

A step count means a different wall time on every machine; a budget of minutes
does not. The clock is passed in, so these tests run on a fake one: each step
"takes" the seconds the test says, and nothing sleeps.
"""

from __future__ import annotations

import math
import queue

import numpy as np
import pytest
import torch
from tests.synthetic import bright_disks

from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.model.unet import UNet
from napari_unet_lab.core.train import (
    Preview,
    PreviewRequest,
    TrainingProgress,
    TrainingRun,
    TrainingSettings,
    ValidationScores,
    border_weight_map,
    semantic_target_from_instances,
    train_interactively,
)
from napari_unet_lab.core.train.records import WARM_UP_STEPS, TrainingClock

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RATE = 1e-2


class FakeClock:
    """A clock that moves only when the test moves it."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def tiny_run(settings: TrainingSettings, clock=None, validation=()) -> TrainingRun:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = UNet(UNetConfig(base_channels=4, depth=2))
    image, labels = bright_disks()
    targets, weights = [semantic_target_from_instances(labels)], [border_weight_map(labels)]
    extra = {} if clock is None else {"clock": clock}
    return TrainingRun(model, [image], targets, weights, settings, 0, list(validation), **extra)


def run_to_end(generator):
    """Return every record and the result of a run."""
    records = []
    while True:
        try:
            records.append(next(generator))
        except StopIteration as stop:
            return records, stop.value


def steps_take(run: TrainingRun, clock: FakeClock, seconds) -> None:
    """Make each training step of `run` advance `clock` by the next of `seconds`."""
    step, durations = run.train_step, iter(seconds)

    def timed() -> float:
        loss = step()
        clock.now += next(durations)
        return loss

    run.train_step = timed


def test_a_budget_run_stops_when_the_budget_is_spent() -> None:
    clock = FakeClock()
    settings = TrainingSettings(minutes=0.2, steps=3, batch_size=1, patch_size=60)  # 12 s
    run = tiny_run(settings, clock)
    steps_take(run, clock, [1.5] * 100)
    records, result = run_to_end(run.run())

    # 8 steps of 1.5 s spend the 12 s: the step count (3) plays no part
    assert [r.step for r in records] == list(range(1, 9)) and result.steps == 8
    assert [r.budget_fraction for r in records] == [1.5 * k / 12 for k in range(1, 9)]
    assert [r.fraction for r in records] == [1.5 * k / 12 for k in range(1, 9)]
    assert [r.eta_seconds for r in records] == [12 - 1.5 * k for k in range(1, 9)]
    assert all(r.total_steps == 8 for r in records[WARM_UP_STEPS:])  # 12 s at 1.5 s a step
    assert records[0].message == "step 1, loss " + f"{records[0].loss:.4f}"
    assert run.timing.spent == 12.0 and not result.stopped_early


def test_the_learning_rate_follows_the_share_of_the_budget_spent() -> None:
    """With steps of exactly 1 s, 6 s of budget train exactly as 6 steps do, bit for bit."""
    common = dict(batch_size=1, patch_size=60, learning_rate=RATE)
    by_steps = tiny_run(TrainingSettings(steps=6, **common))
    records, _ = run_to_end(by_steps.run())

    clock = FakeClock()
    by_time = tiny_run(TrainingSettings(minutes=0.1, **common), clock)
    steps_take(by_time, clock, [1.0] * 6)
    timed, _ = run_to_end(by_time.run())

    expected = [RATE * 0.5 * (1 + math.cos(math.pi * k / 6)) for k in range(6)]
    assert [r.learning_rate for r in records] == expected
    assert [r.learning_rate for r in timed] == expected
    assert by_time.losses == by_steps.losses
    for key, value in by_steps.model.state_dict().items():
        assert torch.equal(by_time.model.state_dict()[key], value), key


def test_a_budget_run_stops_sooner_when_validation_stops_improving() -> None:
    clock = FakeClock()
    settings = TrainingSettings(
        minutes=10, batch_size=1, patch_size=60, validate_every=2, patience=2
    )
    image, labels = bright_disks()
    run = tiny_run(settings, clock, validation=[(image, labels > 0)])
    steps_take(run, clock, [1.0] * 100)
    scores = iter([0.5, 0.4, 0.45, 0.9])
    run.validate = lambda: ValidationScores(next(scores), 0.0, ())
    records, result = run_to_end(run.run())
    assert [r.step for r in records if r.validation] == [2, 4, 6]
    assert result.stopped_early and result.steps == 6 and result.best_step == 2


def test_the_last_step_of_a_budget_is_validated_and_validation_uses_the_budget() -> None:
    clock = FakeClock()
    settings = TrainingSettings(minutes=0.1, batch_size=1, patch_size=60, validate_every=3)
    image, labels = bright_disks()
    run = tiny_run(settings, clock, validation=[(image, labels > 0)])
    steps_take(run, clock, [1.0] * 100)
    validate = run.validate

    def slow_validation():
        clock.now += 0.5
        return validate()

    run.validate = slow_validation
    records, result = run_to_end(run.run())
    # steps 1-3 (3 s), validation (3.5 s), steps 4-6 (6.5 s): spent, the last step validated
    assert [r.step for r in records if r.validation] == [3, 6] and result.steps == 6
    assert run.timing.spent == 7.0 and run.seconds == 6.0  # `seconds`: steps only, as before


def test_previews_count_against_the_budget() -> None:
    clock = FakeClock()
    run = tiny_run(TrainingSettings(minutes=0.2, batch_size=1, patch_size=60), clock)  # 12 s
    steps_take(run, clock, [1.0] * 100)
    preview = run.preview_training_image

    def slow_preview(*args):
        clock.now += 2.0
        return preview(*args)

    run.preview_training_image = slow_preview
    inbox = queue.SimpleQueue()
    inbox.put(PreviewRequest(0, None))
    records, result = run_to_end(train_interactively(run, inbox, preview_every=3))
    # 6 steps of 1 s and previews after steps 1, 3 and 6 of 2 s each spend the 12 s; the
    # step after them ends the run: the last step is the one that finds the budget spent
    assert result.steps == 7 and run.timing.spent == 13.0
    progress = [r for r in records if isinstance(r, TrainingProgress)]
    assert [r.step for r in progress] == list(range(1, 8)) and progress[-1].fraction == 1.0
    # and one of the result, once the run has ended: that one no longer counts
    assert [r.step for r in records if isinstance(r, Preview)] == [1, 3, 6, 7]


def test_resuming_a_budget_run_keeps_what_it_spent() -> None:
    clock = FakeClock()
    settings = TrainingSettings(minutes=0.1, batch_size=1, patch_size=60)
    run = tiny_run(settings, clock)
    steps_take(run, clock, [1.0] * 100)
    generator = run.run()
    for _ in range(4):
        next(generator)
    generator.close()
    resumed = tiny_run(settings, clock)
    resumed.load_state_dict(run.state_dict())
    steps_take(resumed, clock, [1.0] * 100)
    _, result = run_to_end(resumed.run())
    assert result.steps == 6 and resumed.timing.spent == 6.0


def real_paced_durations(steps: int, seed: int = 0) -> list[float]:
    """Step times as on a laptop CPU: slow first steps (caches, thread pools), then ±30 %."""
    rng = np.random.default_rng(seed)
    durations = 4.0 * rng.uniform(0.7, 1.3, steps)
    durations[:3] = [40.0, 9.0, 6.0]
    return durations.tolist()


@pytest.mark.parametrize("budget", [False, True], ids=["steps", "minutes"])
def test_the_time_left_is_within_a_fifth_of_the_truth_after_the_first_tenth(budget) -> None:
    """The estimate from a tenth of the run on holds within 20 % of the time really left.

    A mean over all steps so far is 2x off at the tenth here (the warm-up weighs in);
    the median of recent steps is not.
    """
    clock, steps = FakeClock(), 100
    durations = real_paced_durations(steps)
    if budget:
        settings = TrainingSettings(minutes=sum(durations[:-5]) / 60, batch_size=1, patch_size=60)
    else:
        settings = TrainingSettings(steps=steps, batch_size=1, patch_size=60)
    run = tiny_run(settings, clock)
    steps_take(run, clock, durations)
    records, result = run_to_end(run.run())
    ended = run.timing.spent
    tenth = math.ceil(result.steps / 10)
    for record in records[tenth - 1 : -10]:
        truly_left = ended - sum(durations[: record.step])
        assert record.eta_seconds == pytest.approx(truly_left, rel=0.2), record.step


def test_the_pace_leaves_out_the_warm_up_and_adds_validation_per_step() -> None:
    timing = TrainingClock()
    for seconds in [30.0, 10.0, 8.0, 4.0, 5.0, 3.0, 4.0]:
        timing.add_step(seconds)
    timing.add_other(7.0)  # one validation
    assert timing.seconds_per_step() == 4.0 + 1.0
    assert timing.seconds_left(10) == 50.0 and timing.budget_fraction is None
    assert not timing.out_of_time


@pytest.mark.parametrize("minutes", [0, -1, math.inf, math.nan])
def test_a_budget_must_be_some_time(minutes) -> None:
    with pytest.raises(ValueError, match="minutes must be above 0"):
        TrainingSettings(minutes=minutes)


def test_a_budget_survives_a_json_round_trip() -> None:
    settings = TrainingSettings(minutes=2.5)
    assert TrainingSettings.from_dict(settings.to_dict()) == settings
    assert settings.budget_seconds == 150.0 and TrainingSettings().budget_seconds is None


def test_the_automatic_learning_rate_is_lower_when_fine_tuning() -> None:
    from napari_unet_lab.core.train.settings import automatic_learning_rate

    assert automatic_learning_rate(fine_tuning=False) == 3e-3  # a new 16-wide network
    assert automatic_learning_rate(fine_tuning=True) == 5e-4
