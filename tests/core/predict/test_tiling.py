"""Overlap-tile prediction gives exactly what one pass over the whole mirrored image gives."""

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pytest
import torch

from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.model.unet import UNet
from napari_unet_lab.core.predict.tile_plan import (
    auto_tile_size,
    mirror_indices,
    plan_axis,
    plan_tiles,
    read_tiles,
    write_tiles,
)
from napari_unet_lab.core.predict.tiling import iter_predict_tiled, network_runner, predict_tiled


def _model(**settings):
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_channels=4, **settings))
    for module in model.modules():  # non-trivial batch-norm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture(scope="module")
def valid_model():
    return _model()


@pytest.fixture(scope="module")
def same_model():
    return _model(padding="same")


SHAPES = [(300, 257), (131, 77), (37, 41), (5, 3), (1, 1), (96, 200)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("tile_size", [140, 200, 260])
def test_valid_padding_tiled_is_bit_identical_to_whole_image(valid_model, shape, tile_size):
    """Tiles on the pooling grid see exactly the input the whole pass sees: no tolerance."""
    image = np.random.default_rng(sum(shape)).random(shape, dtype=np.float32)
    whole = predict_tiled(valid_model, image, tile_size=None, output="logits")
    tiled = predict_tiled(valid_model, image, tile_size=tile_size, batch_size=3, output="logits")
    assert tiled.shape == (2, *shape)
    assert np.array_equal(tiled, whole)
    # probabilities are computed from the assembled scores, so they are exact too
    assert np.array_equal(
        predict_tiled(valid_model, image, tile_size=tile_size, batch_size=2),
        predict_tiled(valid_model, image, tile_size=None),
    )


@pytest.mark.parametrize("shape", SHAPES)
def test_same_padding_tiled_matches_whole_image(same_model, shape):
    image = np.random.default_rng(1).random(shape, dtype=np.float32)
    whole = predict_tiled(same_model, image, tile_size=None, output="logits")
    tiled = predict_tiled(same_model, image, tile_size=160, batch_size=2, output="logits")
    assert np.abs(tiled - whole).max() < 1e-5


def test_whole_image_pass_is_the_network_on_the_mirrored_image(valid_model):
    """The reference itself: numpy's reflect padding, one forward pass, cropped."""
    image = np.random.default_rng(2).random((50, 70), dtype=np.float32)
    halo = valid_model.halo
    height = valid_model.valid_input_size(50 + 2 * halo)
    width = valid_model.valid_input_size(70 + 2 * halo)
    padded = np.pad(image, ((halo, height - 50 - halo), (halo, width - 70 - halo)), mode="reflect")
    with torch.no_grad():
        expected = valid_model.for_inference()(torch.from_numpy(padded)[None, None])[0]
    got = predict_tiled(valid_model, image, tile_size=None, output="logits")
    assert np.array_equal(got, expected.numpy()[:, :50, :70])


def test_mirror_indices_match_numpy_reflect():
    for length in (1, 2, 3, 7):
        row = np.arange(length)
        padded = np.pad(row, 20, mode="reflect") if length > 1 else np.zeros(length + 40, int)
        assert np.array_equal(mirror_indices(-20, length + 40, length), padded)


def test_tiles_start_on_the_pooling_grid_and_cover_the_image(valid_model):
    for length in (1, 7, 100, 513, 1000):
        plan = plan_axis(valid_model, length, 128)
        assert all(start % valid_model.size_multiple == 0 for start in plan.starts)
        assert plan.starts[0] == 0 and plan.stops[-1] == length
        assert plan.stops[:-1] == plan.starts[1:]
        assert valid_model.is_valid_input_size(plan.tile_input)


def test_stack_is_predicted_slice_by_slice(valid_model):
    stack = np.random.default_rng(3).random((3, 40, 50), dtype=np.float32)
    result = predict_tiled(valid_model, stack, tile_size=64, output="logits")
    assert result.shape == (3, 2, 40, 50)
    for index in range(3):
        single = predict_tiled(valid_model, stack[index], tile_size=None, output="logits")
        assert np.array_equal(result[index], single)


def test_channels_last_rgb_and_channel_count_check():
    model = _model(in_channels=3)
    rgb = np.random.default_rng(4).random((40, 30, 3), dtype=np.float32)
    result = predict_tiled(model, rgb, channel_axis=-1, tile_size=64, output="logits")
    whole = predict_tiled(
        model, np.moveaxis(rgb, -1, 0), channel_axis=0, tile_size=None, output="logits"
    )
    assert np.array_equal(result, whole)
    with pytest.raises(ValueError, match="expects 3 channel"):
        predict_tiled(model, rgb[..., :2], channel_axis=-1)
    with pytest.raises(ValueError, match="say which image axis"):
        predict_tiled(model, rgb[..., 0])


def test_nan_gives_a_clear_error(valid_model):
    image = np.ones((30, 30), np.float32)
    image[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        predict_tiled(valid_model, image)


def test_progress_records_and_cancel_between_tiles(valid_model):
    image = np.zeros((200, 200), np.float32)
    generator = iter_predict_tiled(valid_model, image, tile_size=64, batch_size=2)
    records = [next(generator) for _ in range(3)]
    assert records[0].done == 0 and records[1].done == 2 and records[2].done == 4
    total = records[0].total
    assert total > 6
    generator.close()  # cancelling: no more tiles are computed
    with pytest.raises(StopIteration):
        next(generator)


def test_out_of_memory_halves_the_batch(valid_model, monkeypatch):
    """A device that cannot take the batch gets smaller batches, then a clear error."""
    from napari_unet_lab.core.predict import tiling

    calls = []
    real_run = tiling.run_network

    def limited_run(model, inputs, device, mixed_precision):
        calls.append(len(inputs))
        if len(inputs) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return real_run(model, inputs, device, mixed_precision)

    monkeypatch.setattr(tiling, "run_network", limited_run)
    image = np.random.default_rng(5).random((100, 100), dtype=np.float32)
    result = predict_tiled(valid_model, image, tile_size=140, batch_size=4, output="logits")
    monkeypatch.undo()
    assert 4 in calls and 2 in calls and 1 in calls
    assert np.array_equal(
        result, predict_tiled(valid_model, image, tile_size=None, output="logits")
    )


def test_intensity_range_is_applied(valid_model):
    image = np.random.default_rng(6).random((40, 40)).astype(np.float32)
    scaled = image * 1000 + 100
    a = predict_tiled(valid_model, image, output="logits")
    b = predict_tiled(valid_model, scaled, intensity_range=(100, 1100), output="logits")
    np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("shape", [(300, 257), (131, 77), (37, 41), (1, 1)])
@pytest.mark.parametrize("tile_size", [128, 160])
def test_same_padding_zero_border_tiles_match_the_whole_image(same_model, shape, tile_size):
    """With the network's own zero padding at the border, tiles still agree with one pass."""
    image = np.random.default_rng(7).random(shape, dtype=np.float32)
    whole = predict_tiled(same_model, image, tile_size=None, output="logits", border="zeros")
    tiled = predict_tiled(same_model, image, tile_size=tile_size, output="logits", border="zeros")
    assert np.abs(tiled - whole).max() < 1e-5
    # the reference is the network on the image, zero-padded at the end to its pooling grid
    grid = same_model.size_multiple
    padded = np.pad(image, [(0, -(-n // grid) * grid - n) for n in shape])
    with torch.no_grad():
        direct = same_model.for_inference()(torch.from_numpy(padded)[None, None])[0].numpy()
    assert np.array_equal(whole, direct[:, : shape[0], : shape[1]])


def test_zero_border_plan_covers_and_stays_on_grid(same_model):
    for length in (1, 9, 100, 513, 2048):
        plan = plan_axis(same_model, length, 160, border="zeros")
        assert plan.starts[0] == 0 and plan.stops[-1] == length
        assert plan.stops[:-1] == plan.starts[1:]
        assert all(start % same_model.size_multiple == 0 for start in plan.input_starts)
        assert all(start >= 0 for start in plan.input_starts)


def test_zero_border_needs_same_padding(valid_model):
    with pytest.raises(ValueError, match="same-padding"):
        predict_tiled(valid_model, np.zeros((20, 20), np.float32), border="zeros")


def test_automatic_tile_size_follows_device_and_memory():
    light, wide = UNet(UNetConfig()), UNet(UNetConfig.paper())
    plenty = 64 * 2**30
    assert auto_tile_size(light, "cpu", 1, memory_budget=plenty) == 512
    assert auto_tile_size(light, "cuda", 4, memory_budget=plenty) == 1024
    # a wide net on a small GPU: smaller tiles, fewer still for larger batches
    tight = 2 * 2**30
    sizes = [auto_tile_size(wide, "cuda", batch, memory_budget=tight) for batch in (1, 4, 16)]
    assert 1024 >= sizes[0] > sizes[1] > sizes[2] >= 4 * wide.halo
    assert sizes[1] ** 2 * 4 * (10 * 64 + 1 + 2) * 2 <= tight  # batch 4, bfloat16
    assert all(size % wide.size_multiple == 0 for size in sizes[:2])


def test_automatic_tile_size_is_used_and_still_exact(valid_model, monkeypatch):
    """The default tile size comes from the memory free; the result stays the whole pass."""
    from napari_unet_lab.core.predict import tile_cost

    per_pixel = (10 * 4 + 1 + 2) * 4  # the test model: 4 base channels, float32
    # half of what is free may go to one batch
    monkeypatch.setattr(tile_cost, "available_memory", lambda device: 2 * 200**2 * per_pixel)
    assert auto_tile_size(valid_model, "cpu") == 200
    shape = (300, 257)
    image = np.random.default_rng(8).random(shape, dtype=np.float32)
    generator = iter_predict_tiled(valid_model, image, device="cpu", output="logits")
    expected = [len(plan_axis(valid_model, length, 200).starts) for length in shape]
    assert next(generator).total == expected[0] * expected[1] > 1
    records = list(generator)  # the rest of the tiles, then the result
    assert records[-1].done == records[-1].total
    tiled = predict_tiled(valid_model, image, device="cpu", output="logits")
    monkeypatch.undo()  # the whole image in one pass needs more than that memory
    whole = predict_tiled(valid_model, image, tile_size=None, output="logits")
    assert np.array_equal(tiled, whole)


# ------------------------------------------------------------------ the public engine
def test_the_plan_keeps_every_pixel_of_every_plane_exactly_once(valid_model):
    plan = plan_tiles(valid_model, (2, 131, 77), tile_size=100)
    assert len(plan) == 2 * len(plan.rows.starts) * len(plan.columns.starts) > 2
    kept = np.zeros((2, 131, 77), int)
    for tile in plan.tiles:
        kept[(*tile.stack_index, tile.out_y, tile.out_x)] += 1
        assert len(tile.ys) == len(tile.xs) == plan.rows.tile_input == plan.columns.tile_input
    assert (kept == 1).all()
    assert sum(len(batch) for batch in plan.batches(3)) == len(plan)


def test_reading_running_and_writing_tiles_by_hand_is_the_engine(valid_model):
    """The public pieces compose into exactly what `predict_tiled` computes."""
    image = np.random.default_rng(9).random((90, 110), dtype=np.float32) * 50
    plan = plan_tiles(valid_model, image.shape, tile_size=100)
    run = network_runner(valid_model, "cpu")
    out = np.zeros((2, *image.shape), np.float32)
    for batch in plan.batches(2):
        inputs = read_tiles(image[None], batch, (0.0, 50.0))
        assert inputs.dtype == np.float32 and inputs.shape[:2] == (len(batch), 1)
        write_tiles(out, batch, run(inputs))
    expected = predict_tiled(
        valid_model, image, tile_size=None, intensity_range=(0, 50), output="logits"
    )
    assert np.array_equal(out, expected)
    with pytest.raises(ValueError, match="got 1 results for 2 tiles"):
        write_tiles(out, batch[:1] * 2, run(inputs)[:1])


def test_a_runner_of_futures_gives_the_same_result_in_any_number_in_flight(valid_model):
    """How the cluster runs: futures, several in flight; the result is still the whole pass."""
    image = np.random.default_rng(10).random((2, 100, 120), dtype=np.float32)
    run = network_runner(valid_model, "cpu")
    whole = predict_tiled(valid_model, image, tile_size=None, output="logits")
    with ThreadPoolExecutor(2) as pool:
        for in_flight in (1, 3):
            tiled = predict_tiled(
                valid_model,
                image,
                tile_size=70,
                output="logits",
                runner=lambda inputs: pool.submit(run, inputs),
                in_flight=in_flight,
            )
            assert np.array_equal(tiled, whole)


def test_cancelling_cancels_the_futures_still_in_flight(valid_model):
    run = network_runner(valid_model, "cpu")
    submitted = []

    def first_done_then_never(inputs):
        submitted.append(Future())
        if len(submitted) == 1:
            submitted[0].set_result(run(inputs))
        return submitted[-1]

    work = iter_predict_tiled(
        valid_model,
        np.zeros((200, 200), np.float32),
        tile_size=64,
        runner=first_done_then_never,
        in_flight=4,
    )
    assert next(work).done == 0
    assert next(work).done == 1  # four batches handed over, the first one written
    assert len(submitted) == 4
    work.close()  # what the widget's cancel does
    assert [future.cancelled() for future in submitted] == [False, True, True, True]


def test_a_single_tile_too_large_for_the_device_is_explained(valid_model, monkeypatch):
    from napari_unet_lab.core.predict import tiling

    def out_of_memory(model, inputs, device, mixed_precision):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    monkeypatch.setattr(tiling, "run_network", out_of_memory)
    with pytest.raises(MemoryError, match="single tile of 140x140 pixels; choose a smaller tile"):
        predict_tiled(valid_model, np.zeros((100, 100), np.float32), tile_size=140)
