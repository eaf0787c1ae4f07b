"""The first-preview benchmark: its timing of the training loop, and a real run in napari."""

import time

import pytest
import torch
from benchmarks.bench_first_preview import annotate, loop_times, measure, step_waits

from napari_unet_lab.core.train import TrainingRun
from napari_unet_lab.gui.train.start_from import NEW_NETWORK


def test_step_waits_are_the_gaps_between_steps_and_say_what_ran_in_them():
    events = [
        ("validation", 0.0, 0.5),  # before the first step: not a wait of a step
        ("step", 1.0, 2.0),
        ("preview", 2.0, 2.3),
        ("step", 2.5, 3.5),
        ("step", 3.5, 4.5),
        ("validation", 4.6, 6.0),
        ("preview", 6.0, 6.1),
        ("step", 6.2, 7.2),
    ]
    waits = step_waits(events)
    assert waits["steps"] == 4 and waits["median_step"] == 1.0
    assert waits["longest_wait"] == pytest.approx(1.7)  # 4.5 → 6.2
    assert waits["longest_wait_step"] == 4
    assert waits["longest_wait_for"] == ["preview", "validation"]
    assert waits["preview"] == pytest.approx(0.3) and waits["validation"] == pytest.approx(1.4)
    assert waits["waits_over_median_step"] == 1 and waits["target_met"] is False
    quick = [("step", 0.0, 1.0), ("preview", 1.0, 1.2), ("step", 1.3, 2.3)]
    assert step_waits(quick)["target_met"] is True
    assert step_waits(quick)["validation"] is None
    assert step_waits([("step", 0.0, 1.0)]) == {"steps": 1, "target_met": None}


def test_loop_times_times_the_methods_and_puts_them_back():
    original = TrainingRun.train_step
    with loop_times() as events:
        assert TrainingRun.train_step is not original
    assert TrainingRun.train_step is original and events == []


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_start_to_first_preview_in_a_real_viewer(make_napari_viewer, qtbot, one_thread):
    """Open the sample, scribble, press Start: the preview layer, the first step, the preview."""
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet-lab", "U-Net: Train")
    annotate(viewer, widget, "nuclei", "scribbles", seed=0)
    assert [layer.name for layer in viewer.layers] == ["nuclei_1", "nuclei_1 scribbles"]
    assert widget.pairs.kind.value == "scribbles"
    widget.start_from.choice.value = NEW_NETWORK
    widget.settings.patch_size.value = 60  # tiny steps: a smoke run, not a measurement
    widget.settings.batch_size.value = 1
    widget.settings.preview_every.value = 2

    def wait_until(condition, timeout):
        qtbot.waitUntil(condition, timeout=int(1000 * timeout))

    started = time.perf_counter()
    report = measure(viewer, widget, wait_until, seconds=1, steps=5)
    took = time.perf_counter() - started
    since = report["seconds_since_start"]
    # Start adds the (empty) layer at once; the first step ends, then its preview is drawn
    assert 0 <= since["first_preview_layer"] < since["first_step"] < since["first_preview"] < took
    assert since["first_step_started"] < since["first_step"]
    assert report["first_preview_target_met"] == (since["first_preview"] <= 15)
    loop = report["training_loop"]
    assert loop["steps"] >= 3 and report["previews"] >= 2
    assert loop["preview"] is not None and loop["longest_wait"] >= 0
    assert report["settings"]["patch_size"] == 60
    assert "nuclei_1 preview" in [layer.name for layer in viewer.layers]
    assert not widget.running and "show" not in vars(widget.live)  # the widget is as it was
