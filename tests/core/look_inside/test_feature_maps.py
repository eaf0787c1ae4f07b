"""Feature maps lie over the pixels they look at, whatever the region looked at."""

import numpy as np
import pytest
import torch

from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.look_inside.feature_maps import feature_maps, limit_region
from napari_unet_lab.core.look_inside.geometry import stage_placements
from napari_unet_lab.core.model.unet import UNet, randomly_initialised

SMALL = {
    "valid-depth2": UNetConfig(base_channels=2, depth=2, batch_norm=False),
    "valid-depth3": UNetConfig(base_channels=2, depth=3, batch_norm=False),
    "same-depth2": UNetConfig(base_channels=2, depth=2, batch_norm=False, padding="same"),
}


def _positive_network(config):
    """A network whose every path carries signal: positive weights, no dead ReLUs."""
    model = UNet(config).double().eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.abs() + 0.01)
    return model


def _stage_outputs(model, images):
    captured = {}
    hooks = [
        module.register_forward_hook(
            lambda _m, _a, out, name=name: captured.__setitem__(name, out.clone())
        )
        for name, module in model.stages()
    ]
    with torch.no_grad():
        model(images)
    for hook in hooks:
        hook.remove()
    return captured


# ----------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("config", SMALL.values(), ids=SMALL.keys())
def test_every_stage_window_is_exactly_the_pixels_that_move_it(config):
    """An impulse in input column c changes precisely the stage pixels whose window holds c.

    Positive weights keep every path alive and a large impulse wins every
    max-pooling it enters, so no path hides (as for the output in test_model).
    """
    model = _positive_network(config)
    width = model.valid_input_size(model.receptive_field + 4 * model.size_multiple)
    height = model.min_input_size
    images = torch.ones(width, 1, height, width, dtype=torch.float64)
    for column in range(width):
        images[column, 0, :, column] = 1e3
    baseline = _stage_outputs(model, torch.ones(1, 1, height, width, dtype=torch.float64))
    moved_by = _stage_outputs(model, images)
    for stage, windows in model.stage_windows(width).items():
        change = (moved_by[stage] - baseline[stage]).abs() > 1e-9 * baseline[stage].abs()
        moved = change.any(dim=1).any(dim=1).numpy()  # (impulse column, stage column)
        for pixel in range(moved.shape[1]):
            support = np.flatnonzero(moved[:, pixel])
            assert (support[0], support[-1]) == (windows.first[pixel], windows.last[pixel]), stage


@pytest.mark.parametrize(
    "config",
    [*SMALL.values(), UNetConfig(), UNetConfig(padding="same"), UNetConfig.paper()],
    ids=[*SMALL.keys(), "light", "light-same", "paper"],
)
def test_each_activation_is_placed_over_the_centre_of_its_receptive_field(config):
    """The guarantee of the feature-map layers, for every pixel of every stage.

    Activation j of a stage is drawn at ``offset + step * j``. That is the centre
    of its receptive field exactly for the encoders and the bottleneck, and within
    `misalignment` for the decoders and the logits, whose windows move in steps
    set by the coarsest pooling grid: never more than ``(2**depth - step) / 2``
    input pixels, i.e. less than half a pixel of the bottleneck.
    """
    with torch.device("meta"):  # geometry only: no weights needed
        model = UNet(config)
    placements = stage_placements(model)
    assert list(placements) == [name for name, _ in model.stages()]
    size = model.valid_input_size(2 * model.halo + 24 * model.size_multiple)
    for stage, windows in model.stage_windows(size).items():
        placement = placements[stage]
        index = np.arange(len(windows.first))
        inside = (windows.first > 0) & (windows.last < size - 1)
        centres = (windows.first + windows.last) / 2
        drawn = placement.offset + placement.step * index
        assert np.abs(drawn - centres)[inside].max() <= placement.misalignment
        assert windows.sizes[inside].max() == placement.receptive_field
        if stage.startswith("encoder") or stage == "bottleneck":
            assert placement.misalignment == 0
        else:
            assert placement.misalignment <= (2**config.depth - placement.step) / 2
    # the output pixel is drawn over the input pixel that prediction puts it on
    assert placements["logits"].offset == model.output_offset


def test_feature_maps_move_where_an_impulse_is():
    """End to end, in image coordinates: an impulse moves the activations drawn around it.

    For every stage, the activations drawn nearest to the impulse respond to it,
    and the responding ones are centred on it to within half a stage pixel plus
    the stage's misalignment and the spread of its window sizes.
    """
    model = _positive_network(UNetConfig(base_channels=2, depth=2, batch_norm=False))
    image = np.full((70, 90), 1.0)
    impulse = (33, 52)
    region = ((10, 60), (20, 85))
    before = feature_maps(model, image, region=region)
    image[impulse] = 1e3
    after = feature_maps(model, image, region=region)
    sizes = {s: w.sizes for s, w in model.stage_windows(model.valid_input_size(200)).items()}
    for plain, lit in zip(before, after, strict=True):
        change = (
            lit.activations[np.argsort(lit.channels)]
            - plain.activations[np.argsort(plain.channels)]
        )  # compare channel by channel: the order by strength may differ
        moved = (np.abs(change) > 1e-9).any(axis=0)
        spread = (sizes[plain.stage].max() - sizes[plain.stage].min()) / 2
        for axis in (0, 1):
            positions = plain.origin[axis] + plain.step * np.arange(moved.shape[axis])
            responding = positions[moved.any(axis=1 - axis)]
            nearest = np.argmin(np.abs(positions - impulse[axis]))
            assert moved.any(axis=1 - axis)[nearest], plain.stage
            middle = (responding.min() + responding.max()) / 2
            bound = plain.step / 2 + plain.misalignment + spread
            assert abs(middle - impulse[axis]) <= bound, plain.stage


# ----------------------------------------------------------------------------- feature maps
def test_feature_maps_do_not_depend_on_the_region_looked_at():
    """Two overlapping views show the same activation for the same place of the image."""
    model = randomly_initialised(UNetConfig(base_channels=4, depth=2), generator=1)
    image = np.random.default_rng(0).random((90, 120)).astype(np.float32)
    first = feature_maps(model, image, region=((0, 60), (10, 90)))
    second = feature_maps(model, image, region=((24, 90), (34, 120)))
    for a, b in zip(first, second, strict=True):
        assert a.stage == b.stage and a.step == b.step
        # undo the channel ordering, then compare where the two grids overlap
        a_maps = a.activations[np.argsort(a.channels)]
        b_maps = b.activations[np.argsort(b.channels)]
        shift = [(b.origin[axis] - a.origin[axis]) / a.step for axis in (0, 1)]
        assert all(float(s).is_integer() for s in shift)
        dy, dx = int(shift[0]), int(shift[1])
        overlap_a = a_maps[:, dy:, dx:]
        overlap_b = b_maps[:, : overlap_a.shape[1], : overlap_a.shape[2]]
        overlap_a = overlap_a[:, : overlap_b.shape[1], : overlap_b.shape[2]]
        assert overlap_a.size > 0
        np.testing.assert_allclose(overlap_a, overlap_b, rtol=1e-4, atol=1e-5)


def test_feature_maps_cover_the_region_strongest_channel_first():
    model = randomly_initialised(UNetConfig(base_channels=4, depth=2), generator=2)
    image = np.random.default_rng(1).random((50, 70))
    maps = feature_maps(model, image, region=((5, 45), (-10, 100)))  # clipped to the image
    assert [m.stage for m in maps] == [name for name, _ in model.stages()]
    for m in maps:
        assert m.activations.dtype == np.float32
        assert np.all(np.diff(m.strength) <= 0)
        np.testing.assert_allclose(m.activations.reshape(len(m.strength), -1).std(1), m.strength)
        assert sorted(m.channels) == list(range(len(m.channels)))
        for axis, (first, stop) in enumerate(((5, 45), (0, 70))):
            drawn = m.origin[axis] + m.step * np.arange(m.activations.shape[axis + 1])
            # every activation lies over the region, and they fill it to within a stage pixel
            assert drawn.min() >= first - 0.5 and drawn.max() < stop - 0.5
            assert drawn.min() - (first - 0.5) <= m.step and (stop - 0.5) - drawn.max() <= m.step


def test_large_regions_are_cut_to_the_pixel_cap_about_their_centre():
    assert limit_region(((0, 100), (0, 100)), 10_000) == ((0, 100), (0, 100))
    (top, bottom), (left, right) = limit_region(((0, 1000), (0, 2000)), 20_000)
    assert (bottom - top) * (right - left) <= 20_000
    assert abs((top + bottom) / 2 - 500) <= 1 and abs((left + right) / 2 - 1000) <= 1
    model = randomly_initialised(UNetConfig(base_channels=2, depth=1), generator=0)
    maps = feature_maps(model, np.zeros((300, 300)), max_pixels=40 * 40)
    assert maps[0].activations.shape[1:] == (40, 40)


def test_feature_maps_refuse_images_that_do_not_fit():
    model = randomly_initialised(UNetConfig(in_channels=3, base_channels=2, depth=1), 0)
    with pytest.raises(ValueError, match="3 channel"):
        feature_maps(model, np.zeros((40, 40)))
    with pytest.raises(ValueError, match="NaN"):
        feature_maps(model, np.full((3, 40, 40), np.nan))
