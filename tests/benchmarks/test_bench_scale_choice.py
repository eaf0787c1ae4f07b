"""The scale-choice benchmark: candidate sizes around the first estimate, and its rules."""

import math

import pytest
from benchmarks.bench_scale_choice import SHOWN, candidates, summarise
from tests.synthetic import bright_disks

from napari_unet_lab.core.model.builtin import builtin_models
from napari_unet_lab.core.model.files import load_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_each_candidate_shows_the_network_objects_at_its_size_whatever_predicted_larger():
    model, info = load_model(builtin_models()["nuclei"])
    image, labels = bright_disks((160, 160), 0, count=12, radii=(8, 12))
    row = candidates(model, info, image, labels, rgb=False)
    assert [p["shown"] for p in row["passes"]] == list(SHOWN)
    for entry in row["passes"]:
        expected = 2 ** (entry["shown"] / 4) * info.object_diameter / row["first_estimate"]
        assert entry["scale"] == pytest.approx(expected, rel=1e-9)
        assert 0 <= entry["ap_50"] <= 1 and 0 <= entry["entropy"] <= 1


def _pass(shown, ap, entropy, estimate=20.0, scale=1.0):
    return {"shown": shown, "ap_50": ap, "mean_ap": ap / 2, "entropy": entropy,
            "entropy_objects": entropy, "uncertain_share": entropy, "estimate": estimate,
            "scale": scale}  # fmt: skip


def test_rules_choose_by_their_cue_and_the_best_knows_the_truth():
    aps = [0.1, 0.2, 0.3, 0.5, 0.9, 0.4, 0.3]
    entropies = [0.9, 0.8, 0.7, 0.6, 0.5, 0.1, 0.4]
    passes = [_pass(j, ap, e) for j, ap, e in zip(SHOWN, aps, entropies, strict=True)]
    passes[3]["estimate"] = 20.0 * math.sqrt(2)  # at 1×, objects look √2 the training size
    images = {"a": {"kind": "k", "passes": passes}, "none found": {"kind": "k", "passes": []}}
    summary = summarise(images, trained=20.0)
    assert summary["best (knows the truth)"]["all"] == [0.9, 0.45]
    assert summary["least entropy"]["k"] == [0.4, 0.2]  # shown 2^(2/4)
    assert summary["always 1.00× as trained"]["all"] == [0.5, 0.25]
    assert summary["closest to the training size"]["all"] == [0.1, 0.05]  # the first: a tie
