"""Training: targets and border weights, augmentation, losses, the run, validation, provenance.

`prepare_training` is the one way to build a `TrainingRun` from annotated
images; `train_interactively` runs it while taking up new annotations and
preview requests; `trained_model_info` describes the result for its model file.
"""

from .augment import augment_batch
from .interactive import NewAnnotation, PreviewRequest, train_interactively
from .losses import LOSSES, LossName, soft_overlap_loss, training_loss, weighted_cross_entropy
from .pipeline import (
    AnnotatedImage,
    check_both_classes,
    check_memory,
    fine_tuning_copy,
    prepare_training,
    update_annotation,
)
from .provenance import default_class_names, trained_model_info
from .records import TrainingProgress, TrainingResult
from .run import TrainingRun, train
from .settings import FINE_TUNING_RATE, NEW_NETWORK_RATE, TrainingSettings
from .targets import (
    MAX_CLASSES,
    UNANNOTATED,
    AnnotationKind,
    TrainingTarget,
    annotation_classes,
    border_weight_map,
    class_balance_weights,
    rectangles_mask,
    semantic_target_from_instances,
    sequential_labels,
    training_target,
)
from .validation import (
    Preview,
    ValidationScores,
    foreground_iou,
    predict_foreground,
    predict_probabilities,
    region_preview,
    uncertainty_map,
    validation_scores,
)

__all__ = [
    "LOSSES",
    "MAX_CLASSES",
    "UNANNOTATED",
    "AnnotatedImage",
    "AnnotationKind",
    "LossName",
    "NewAnnotation",
    "Preview",
    "PreviewRequest",
    "TrainingProgress",
    "TrainingResult",
    "TrainingRun",
    "TrainingSettings",
    "FINE_TUNING_RATE",
    "NEW_NETWORK_RATE",
    "TrainingTarget",
    "ValidationScores",
    "annotation_classes",
    "augment_batch",
    "border_weight_map",
    "check_both_classes",
    "check_memory",
    "class_balance_weights",
    "default_class_names",
    "fine_tuning_copy",
    "foreground_iou",
    "predict_foreground",
    "predict_probabilities",
    "prepare_training",
    "rectangles_mask",
    "region_preview",
    "semantic_target_from_instances",
    "sequential_labels",
    "soft_overlap_loss",
    "train",
    "train_interactively",
    "trained_model_info",
    "training_loss",
    "training_target",
    "uncertainty_map",
    "update_annotation",
    "validation_scores",
    "weighted_cross_entropy",
]
