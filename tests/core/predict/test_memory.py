"""Prediction keeps within memory and keeps the user informed.

The promises: settings whose batch of tiles clearly cannot fit are refused before
any tile is computed, with the estimate and what fits; running out of memory on
the CPU halves the batch like on a GPU; a batch is bounded so progress comes
within seconds; tiles so small that most of the work is context are pointed out.
None of this changes a single output value.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.device import NotEnoughMemory, is_out_of_memory
from napari_unet_lab.core.model.unet import UNet
from napari_unet_lab.core.predict import tile_cost, tiling
from napari_unet_lab.core.predict.tile_cost import check_batch_fits, context_advice
from napari_unet_lab.core.predict.tile_plan import auto_tile_size, plan_tiles
from napari_unet_lab.core.predict.tiling import iter_predict_tiled, predict_tiled

PER_PIXEL = (10 * 4 + 1 + 2) * 4  # bytes: 4 base channels, 1 in, 2 classes, float32
MIB = 2**20


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return UNet(UNetConfig(base_channels=4))


@pytest.fixture
def network_calls(monkeypatch):
    """Batch sizes the network is run on, in order."""
    calls = []
    real_run = tiling.run_network

    def counted(network, inputs, device, mixed_precision):
        calls.append(len(inputs))
        return real_run(network, inputs, device, mixed_precision)

    monkeypatch.setattr(tiling, "run_network", counted)
    return calls


def test_a_batch_beyond_the_free_memory_is_refused_with_what_fits(model):
    available = 100 * MIB
    cpu = torch.device("cpu")
    with pytest.raises(NotEnoughMemory) as refused:
        check_batch_fits(model, (572, 572), 8, cpu, available=available)

    fitting_batch = available // (PER_PIXEL * 572 * 572)
    fitting_edge = model.valid_input_size(math.isqrt(available // (PER_PIXEL * 8)), larger=False)
    needed = round(PER_PIXEL * 572 * 572 * 8 / MIB)
    assert str(refused.value) == (
        f"batches of 8 tiles of 572 px need about {needed} MiB of memory, but only "
        f"100 MiB is free; choose a tile size of at most {fitting_edge} px or at most "
        f"{fitting_batch} tiles per batch"
    )
    assert fitting_batch == 1 and fitting_edge > 0
    # what the message offers does fit
    check_batch_fits(model, (572, 572), fitting_batch, cpu, available=available)
    check_batch_fits(model, (fitting_edge, fitting_edge), 8, cpu, available=available)
    larger = model.valid_input_size(fitting_edge + 1)
    with pytest.raises(NotEnoughMemory):
        check_batch_fits(model, (larger, larger), 8, cpu, available=available)


def test_when_not_even_one_tile_fits_only_the_tile_size_is_offered(model):
    available = 20 * MIB
    with pytest.raises(NotEnoughMemory) as refused:
        check_batch_fits(model, (700, 900), 1, torch.device("cpu"), available=available)
    single = model.valid_input_size(math.isqrt(available // PER_PIXEL), larger=False)
    assert str(refused.value) == (
        f"one tile of 700×900 px needs about {round(PER_PIXEL * 700 * 900 / MIB)} MiB of "
        "memory, but only 20 MiB is free; "
        f"choose a tile size of at most {single} px"
    )


def test_prediction_refuses_before_computing_any_tile(model, network_calls, monkeypatch):
    monkeypatch.setattr(tile_cost, "available_memory", lambda device: 10 * MIB)
    work = iter_predict_tiled(model, np.zeros((300, 300), np.float32), tile_size=None)
    with pytest.raises(NotEnoughMemory, match=r"^one tile of \d+ px needs about .* choose a tile"):
        next(work)
    assert network_calls == []


def test_the_automatic_tile_size_keeps_within_the_free_cpu_memory(model, monkeypatch):
    """Half of the memory free on the CPU goes to one batch: here, tiles of 300 px at most."""
    monkeypatch.setattr(tile_cost, "available_memory", lambda device: 2 * 300**2 * PER_PIXEL)
    assert auto_tile_size(model, "cpu") == 300 // model.size_multiple * model.size_multiple
    image = np.zeros((700, 700), np.float32)
    work = iter_predict_tiled(model, image, device="cpu")
    first = next(work)
    work.close()
    plan = plan_tiles(model, image.shape, auto_tile_size(model, "cpu"))
    assert first.total == len(plan) > 1 and plan.rows.tile_input <= 300


def test_running_out_of_cpu_memory_halves_the_batch_then_says_what_to_change(model, monkeypatch):
    calls = []

    def cpu_allocator_fails(network, inputs, device, mixed_precision):
        calls.append(len(inputs))
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 1073741824 bytes. Error code 12 (Cannot allocate memory)"
        )

    monkeypatch.setattr(tiling, "run_network", cpu_allocator_fails)
    with pytest.raises(NotEnoughMemory) as stopped:
        predict_tiled(model, np.zeros((300, 300), np.float32), tile_size=140, batch_size=4)
    assert calls == [4, 2, 1]
    assert str(stopped.value) == (
        "the CPU ran out of memory for a single tile of 140x140 pixels; choose a smaller tile size"
    )


@pytest.mark.parametrize(
    "error",
    [
        MemoryError(),
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes"),
        RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        torch.cuda.OutOfMemoryError(""),
        OSError(12, "Cannot allocate memory"),
    ],
)
def test_out_of_memory_is_recognised_however_it_is_raised(error):
    assert is_out_of_memory(error)


def test_other_errors_are_not_taken_for_out_of_memory():
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))  # not how memory errors come


def test_small_tiles_large_batches_report_soon_and_say_what_is_faster(
    model, network_calls, monkeypatch
):
    """Tiles of 64 px in batches of 256: news before the first batch, bounded batches, advice."""
    image = np.random.default_rng(3).random((80, 70), dtype=np.float32)
    plan = plan_tiles(model, image.shape, 64)
    tile = plan.rows.tile_input
    monkeypatch.setattr(tile_cost, "MAX_BATCH_PIXELS_CPU", 5 * tile * tile)

    work = iter_predict_tiled(model, image, tile_size=64, batch_size=256, output="logits")
    first = next(work)
    assert network_calls == []  # said before the first batch is computed
    fed = len(plan.rows.starts) * len(plan.columns.starts) * tile * tile
    share = round(100 * (1 - image.size / fed))
    suggested = tile + 1  # the smallest accepted tile whose output is 2/3 of it or more
    while not (
        model.is_valid_input_size(suggested)
        and model.output_size(suggested) ** 2 >= 2 / 3 * suggested**2
    ):
        suggested += 1
    assert model.output_size(tile) ** 2 < 2 / 3 * tile**2 and suggested > tile
    advice = (
        f"with tiles of {tile} px, {share} % of the work is context; "
        f"a tile size of {suggested} px or more is faster"
    )
    batches = -(-len(plan) // 5)
    assert first.message == (
        f"predicting {len(plan)} tiles of {tile} px in {batches} batches of 5 "
        f"(not 256: smaller batches report progress sooner); {advice}"
    )
    later = list(work)
    assert later[0].message == f"predicted 5 of {len(plan)} tiles; {advice}"
    assert set(network_calls) <= {5, len(plan) % 5 or 5} and sum(network_calls) == len(plan)

    # smaller batches, same numbers
    expected = predict_tiled(model, image, tile_size=None, output="logits")
    assert np.array_equal(predict_tiled(model, image, tile_size=64, output="logits"), expected)


def test_no_advice_where_tiles_are_large_enough_or_cannot_grow(model):
    small = plan_tiles(model, (2000, 2000), 64)
    assert context_advice(model, small).startswith("with tiles of")
    suggested = int(context_advice(model, small).split("a tile size of ")[1].split(" px")[0])
    assert context_advice(model, plan_tiles(model, (2000, 2000), suggested)) == ""
    assert context_advice(model, plan_tiles(model, (2000, 2000), 512)) == ""
    # a small image in one tile: mostly mirrored context, but a larger tile would not help
    assert context_advice(model, plan_tiles(model, (40, 40), None)) == ""


def test_the_first_record_of_a_single_tile_says_so(model):
    work = iter_predict_tiled(model, np.zeros((100, 100), np.float32), tile_size=None)
    first = next(work)
    work.close()
    tile = plan_tiles(model, (100, 100), None).rows.tile_input
    assert first.message == f"predicting 1 tile of {tile} px"
