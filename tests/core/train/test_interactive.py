"""Training that listens: annotations and preview requests reach the loop between steps.

The widget only puts messages into a queue or sends them into the generator;
the loop takes new annotations up by the same rule as `prepare_training`, and
previews where it was last asked to.
"""

from __future__ import annotations

import queue

import numpy as np
import pytest
import torch
from tests.synthetic import bright_disks

from napari_unet_lab.core.config import TargetConfig, UNetConfig
from napari_unet_lab.core.model.unet import UNet
from napari_unet_lab.core.progress import run_to_end
from napari_unet_lab.core.train import (
    AnnotatedImage,
    NewAnnotation,
    Preview,
    PreviewRequest,
    TrainingProgress,
    TrainingResult,
    TrainingSettings,
    annotation_classes,
    prepare_training,
    train_interactively,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def scribbled(seed: int = 0) -> AnnotatedImage:
    image, labels = bright_disks(seed=seed)
    scribbles = np.zeros_like(labels)
    scribbles[:4] = 1
    scribbles[labels == labels.max()] = 2
    return AnnotatedImage(image, scribbles, "scribbles", name=f"strokes {seed}")


def started(items, steps: int = 7, targets: TargetConfig | None = None):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = UNet(UNetConfig(base_channels=4, depth=2))
    settings = TrainingSettings(steps=steps, batch_size=1, patch_size=60)
    return run_to_end(prepare_training(model, items, (), settings, 0, targets))


def everything(generator, sent=None):
    records = []
    while True:
        try:
            records.append(generator.send(sent) if records else next(generator))
        except StopIteration as stop:
            return records, stop.value


def test_previews_come_after_step_one_and_every_few_steps_where_last_asked() -> None:
    run = started([scribbled()])
    inbox = queue.SimpleQueue()
    inbox.put(PreviewRequest(0, (slice(0, 10), slice(0, 10))))
    inbox.put(PreviewRequest(0, (slice(10, 40), slice(20, 70))))  # the latest counts
    records, result = everything(train_interactively(run, inbox, preview_every=3))

    kinds = ["P" if isinstance(r, Preview) else "s" for r in records]
    # steps 1..7, previews after steps 1, 3 and 6, and of the network the run returns
    assert kinds == list("sPssPsssPsP")
    previews = [r for r in records if isinstance(r, Preview)]
    assert [p.step for p in previews] == [1, 3, 6, 7]
    assert all(p.region == (slice(10, 40), slice(20, 70)) and p.index == 0 for p in previews)
    assert previews[0].classes.shape == previews[0].uncertainty.shape == (30, 50)
    assert [r.step for r in records if isinstance(r, TrainingProgress)] == list(range(1, 8))
    assert isinstance(result, TrainingResult) and result.steps == 7


def test_a_step_that_validated_passes_its_preview_on_to_the_next_step() -> None:
    """No step waits for a validation and a preview at once (issue #11, target c)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = UNet(UNetConfig(base_channels=4, depth=2))
    settings = TrainingSettings(steps=7, batch_size=1, patch_size=60, validate_every=3)
    run = run_to_end(prepare_training(model, [scribbled(0)], [scribbled(1)], settings, 0))
    inbox = queue.SimpleQueue()
    inbox.put(PreviewRequest(0, (slice(0, 10), slice(0, 10))))
    records, result = everything(train_interactively(run, inbox, preview_every=3))

    validated = [r.step for r in records if isinstance(r, TrainingProgress) and r.validation]
    assert validated == [3, 6, 7]  # every 3 steps and after the last
    previews = [r for r in records if isinstance(r, Preview)]
    assert [p.step for p in previews[:-1]] == [1, 4]  # 3 and 6 moved on
    for before, after in zip(records[:-1], records[1:-1], strict=False):
        if isinstance(after, Preview):
            assert isinstance(before, TrainingProgress) and before.validation is None
    # after the run, the network it returns: the best validation's weights
    assert previews[-1] is records[-1] and previews[-1].step == result.best_step


def test_the_last_preview_shows_the_network_the_run_returns() -> None:
    """The preview layer ends on the result, not on a network some steps older."""
    run = started([scribbled()], steps=5)
    inbox = queue.SimpleQueue()
    inbox.put(PreviewRequest(0, None))
    records, result = everything(train_interactively(run, inbox, preview_every=10))

    last = records[-1]
    assert isinstance(last, Preview) and last.step == result.steps == 5
    expected = run.preview_training_image(0, None)  # the weights stand still now
    np.testing.assert_array_equal(last.classes, expected.classes)
    # a run whose latest preview already shows its last step ends without another
    run = started([scribbled()], steps=3)
    inbox = queue.SimpleQueue()
    inbox.put(PreviewRequest(0, None))
    records, _ = everything(train_interactively(run, inbox, preview_every=3))
    assert [r.step for r in records if isinstance(r, Preview)] == [1, 3]


def test_new_annotations_sent_in_are_used_from_the_next_step() -> None:
    first = scribbled()
    run = started([first])
    loop = train_interactively(run)
    assert next(loop).step == 1
    image, labels = bright_disks()
    fuller = AnnotatedImage(image, np.where(labels > 0, 2, 1), "scribbles", name="strokes 0")
    said = loop.send(NewAnnotation(0, fuller))
    assert said == "Training now uses the new annotations of strokes 0."
    expected, _ = annotation_classes(fuller.annotation, "scribbles")
    np.testing.assert_array_equal(run.targets[0], expected)
    assert next(loop).step == 2


def test_unusable_new_annotations_say_why_and_change_nothing() -> None:
    run = started([scribbled()])
    before = run.targets[0].copy(), run.weights[0].copy()
    inbox = queue.SimpleQueue()
    image, labels = bright_disks()
    only_background = AnnotatedImage(image, np.where(labels > 0, 0, 1), "scribbles", name="s")
    inbox.put(NewAnnotation(0, only_background))
    loop = train_interactively(run, inbox)
    said = next(loop)
    assert said.startswith("New annotations not used yet: the scribbles hold only label 1")
    np.testing.assert_array_equal(run.targets[0], before[0])
    np.testing.assert_array_equal(run.weights[0], before[1])
    assert next(loop).step == 1


def test_new_annotations_rebalance_every_image_as_a_fresh_start_would() -> None:
    """Class weights are shared by all images: one image's new strokes change them all."""
    items = [scribbled(0), scribbled(1)]
    run = started(items)
    loop = train_interactively(run)
    next(loop)
    image, labels = bright_disks(seed=0)
    more = AnnotatedImage(image, np.where(labels > 0, 2, 1), "scribbles", name="strokes 0")
    loop.send([NewAnnotation(0, more)])
    fresh = started([more, items[1]])
    np.testing.assert_allclose(run.class_weights, fresh.class_weights, rtol=1e-12)
    for now, expected in zip(run.weights, fresh.weights, strict=True):
        np.testing.assert_allclose(now, expected, rtol=1e-6)
    loop.close()


def test_a_preview_of_an_image_not_trained_on_says_so_and_training_goes_on() -> None:
    loop = train_interactively(started([scribbled()], steps=2), preview_every=1)
    assert next(loop).step == 1
    assert loop.send(PreviewRequest(5, None)).step == 2
    assert next(loop) == "No preview: there is no training image 5 (there are 1)"
    with pytest.raises(StopIteration):
        next(loop)


def test_a_message_of_another_kind_is_refused_with_a_clear_error() -> None:
    loop = train_interactively(started([scribbled()], steps=2))
    next(loop)
    with pytest.raises(TypeError, match="NewAnnotation and PreviewRequest messages, got 'go'"):
        loop.send("go")
