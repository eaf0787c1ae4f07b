"""Training losses: weighted cross-entropy with border weights, soft Dice and Jaccard.

Pixels that nobody annotated (class `targets.UNANNOTATED`, negative) count for
nothing in any of them.

References
----------
.. [1] O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for
       Biomedical Image Segmentation", MICCAI 2015, arXiv:1505.04597.
.. [2] F. Milletari, N. Navab, S.-A. Ahmadi, "V-Net: Fully Convolutional Neural
       Networks for Volumetric Medical Image Segmentation", 3DV 2016 (soft Dice).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

LossName = Literal["cross_entropy", "dice", "jaccard", "cross_entropy+dice"]
LOSSES = ("cross_entropy", "dice", "jaccard", "cross_entropy+dice")


def weighted_cross_entropy(
    logits: torch.Tensor, classes: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Return the weighted cross-entropy per annotated pixel, eq. 1 of [1]_.

    Parameters
    ----------
    logits : (B, K, H, W) tensor
        Network output.
    classes : (B, H, W) int64 tensor
        Class per pixel; negative values (unannotated) are ignored.
    weights : (B, H, W) tensor
        Weight per pixel.

    Returns
    -------
    scalar tensor
        The weighted sum over annotated pixels divided by their number.
    """
    annotated = classes >= 0
    per_pixel = F.cross_entropy(logits.float(), classes.clamp_min(0), reduction="none")
    return (per_pixel * weights * annotated).sum() / annotated.sum().clamp_min(1)


def soft_overlap_loss(
    logits: torch.Tensor, classes: torch.Tensor, kind: Literal["dice", "jaccard"] = "dice"
) -> torch.Tensor:
    """Return 1 − the soft Dice (or Jaccard) overlap of the object classes, [2]_.

    Probabilities and one-hot targets are summed over the annotated pixels of
    the whole batch, per object class (class 0, the background, is left out),
    and the overlaps averaged over the classes. A smoothing term of 1 keeps
    patches without objects from dividing by zero.

    Parameters
    ----------
    logits : (B, K, H, W) tensor
        Network output.
    classes : (B, H, W) int64 tensor
        Class per pixel; negative values (unannotated) are ignored.
    kind : {"dice", "jaccard"}
        Which overlap.

    Returns
    -------
    scalar tensor
        0 for a perfect, sure prediction.

    Examples
    --------
    >>> classes = torch.tensor([[[0, 1], [1, -1]]])
    >>> sure = torch.tensor([[[[9.0, -9], [-9, 0]], [[-9.0, 9], [9, 0]]]])
    >>> round(float(soft_overlap_loss(sure, classes)), 3)
    0.0
    """
    n_classes = logits.shape[1]
    annotated = (classes >= 0).unsqueeze(1)
    probabilities = logits.float().softmax(dim=1) * annotated
    one_hot = F.one_hot(classes.clamp_min(0), n_classes).permute(0, 3, 1, 2) * annotated
    dims = (0, 2, 3)
    intersection = (probabilities * one_hot).sum(dims)[1:]
    total = probabilities.sum(dims)[1:] + one_hot.sum(dims)[1:]
    if kind == "dice":
        overlap = (2 * intersection + 1) / (total + 1)
    else:
        overlap = (intersection + 1) / (total - intersection + 1)
    return 1 - overlap.mean()


def training_loss(
    logits: torch.Tensor, classes: torch.Tensor, weights: torch.Tensor, loss: LossName
) -> torch.Tensor:
    """Return the loss named by `loss` (see `TrainingSettings.loss`).

    Parameters
    ----------
    logits : (B, K, H, W) tensor
        Network output.
    classes : (B, H, W) int64 tensor
        Class per pixel; negative values (unannotated) are ignored.
    weights : (B, H, W) tensor
        Weight per pixel, used by the cross-entropy.
    loss : {"cross_entropy", "dice", "jaccard", "cross_entropy+dice"}
        Which loss.

    Returns
    -------
    scalar tensor
    """
    if loss == "cross_entropy":
        return weighted_cross_entropy(logits, classes, weights)
    if loss in ("dice", "jaccard"):
        return soft_overlap_loss(logits, classes, loss)
    return weighted_cross_entropy(logits, classes, weights) + soft_overlap_loss(logits, classes)
