"""What makes CPU prediction faster keeps every promise: exact tiles, today's objects."""

import numpy as np
import torch

from napari_unet_lab.core.config import UNetConfig
from napari_unet_lab.core.images import intensity_range_for
from napari_unet_lab.core.model.builtin import builtin_models
from napari_unet_lab.core.model.files import load_model
from napari_unet_lab.core.model.unet import UNet
from napari_unet_lab.core.predict.objects import class_labels, object_labels
from napari_unet_lab.core.predict.tiling import inference_network, predict_tiled, run_network
from napari_unet_lab.samples import load_sample

CPU = torch.device("cpu")


def test_the_inference_copy_is_made_once_while_the_weights_stay_the_same():
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_channels=4, depth=2))
    image = np.random.default_rng(0).random((60, 70), dtype=np.float32)
    first = inference_network(model, CPU)
    assert inference_network(model, CPU) is first
    before = predict_tiled(model, image, device="cpu")

    # a training step changes the weights in place: the next prediction uses the new ones
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    model(torch.rand(1, 1, 92, 92)).mean().backward()
    optimiser.step()
    model.eval()
    assert inference_network(model, CPU) is not first
    after = predict_tiled(model, image, device="cpu")
    assert not np.array_equal(after, before)
    with torch.inference_mode():
        fresh = model.for_inference()
        expected = predict_tiled(
            model, image, device="cpu", runner=lambda x: run_network(fresh, x, CPU, None)
        )
    assert np.array_equal(after, expected)

    # so does loading other weights
    other = UNet(model.config)
    model.load_state_dict(other.state_dict())
    assert inference_network(model, CPU) is not inference_network(other, CPU)
    assert np.array_equal(
        predict_tiled(model, image, device="cpu"), predict_tiled(other, image, device="cpu")
    )


def test_builtin_model_on_the_sample_tiles_exactly_and_finds_todays_objects():
    """The faster path: tiled = whole pass bit for bit; vs today, float rounding only."""
    model, info = load_model(builtin_models()["nuclei"])
    image = load_sample("nuclei_1")[0][:300, :400]  # BBBC039, a corner: seconds, not tens
    intensity_range = intensity_range_for(image, info.normalization)
    settings = dict(device="cpu", intensity_range=intensity_range)

    tiled = predict_tiled(model, image, tile_size=256, **settings)  # 2 x 3 tiles
    whole = predict_tiled(model, image, tile_size=None, **settings)
    assert np.array_equal(tiled, whole)

    # today's path: batch norm folded, channels first, the head's running sum
    today_network = model.for_inference(channels_last=False)
    today = predict_tiled(
        model,
        image,
        tile_size=256,
        runner=lambda x: run_network(today_network, x, CPU, None),
        **settings,
    )
    assert np.abs(tiled - today).max() < 1e-4
    assert np.array_equal(class_labels(tiled), class_labels(today))
    objects, todays_objects = object_labels(1 - tiled[0]), object_labels(1 - today[0])
    assert objects.max() > 20  # the sample's nuclei, found
    assert np.array_equal(objects, todays_objects)
