"""Per-class IoU and Dice, mIoU / mDice, as MONAI metrics, ignite handlers and JSON/CSV reports.

Definitions (what every number this package reports means)
-----------------------------------------------------------

* Per-class IoU and Dice are computed with MONAI's ``MeanIoU`` and ``DiceMetric`` with
  ``include_background=True``: background is a class like the others.
* **mIoU is the mean of the per-class IoU over all classes, background included**, as usual in semantic
  segmentation and in the paper (CHASE_DB1: background and vessel; COVID-19: background, ground-glass,
  consolidation, pleural effusion). mDice likewise.
* Aggregation over images (the headline numbers, ``aggregation="image"``): the IoU of each class is computed per
  image, then averaged over images (MONAI's per-image metric, reduced over the batch dimension); mIoU is the mean
  of those per-class values.
* Empty classes: when a class is absent from both the prediction and the label of an image, that image says
  nothing about the class, so its IoU/Dice there is NaN and is left out of the class's mean over images (MONAI
  would give NaN with ``ignore_empty=True`` even when the class was wrongly predicted, hiding false positives, and
  1 with ``ignore_empty=False``, rewarding every image without the class). A class predicted in an image whose
  label lacks it scores 0 there. A class that occurs in no label and no prediction of the whole set gets NaN and
  is left out of mIoU (``nanmean``).
* Also reported, ``aggregation="dataset"`` ("pooled"): intersection and union summed over all pixels of all
  images before dividing (the confusion-matrix mIoU of mmsegmentation / UniMatch's evaluation), from MONAI's
  ``get_confusion_matrix``. Pooled and per-image numbers differ when classes are small and absent from many
  slices (COVID-19 CT), so reports carry both, named ``iou`` / ``iou_pooled``.

Inputs: predictions may be logits or probabilities ``(B, K, X, Y)`` (argmax is taken), one-hot ``(B, K, X, Y)``,
or label maps ``(B, 1, X, Y)``; labels one-hot or label maps. No post-processing transform is needed in an
evaluator, though ``AsDiscreted(argmax=True, to_onehot=K)`` outputs are accepted too.

Per volume (:mod:`.volume`, when test items name the volume they were cut from): the slices' predictions stacked
back into each volume and scored in 3D per foreground class -- Dice, IoU, HD95, ASD (MONAI's metrics) -- averaged
over volumes, then over the foreground classes, the way the medical SSL literature reports them; the report's
``per_volume`` section.

JSON reports write NaN as ``NaN`` (Python's ``json`` reads it back; strict JSON parsers need ``allow_nan``).
"""

from .overlap import (
    AGGREGATION_NOTE,
    MDice,
    MIoU,
    PerClassDice,
    PerClassDiceMetric,
    PerClassIoU,
    PerClassIoUMetric,
    SecondObserverAgreement,
    mDice,
    mIoU,
)
from .report import MetricsReportHandler, compute_segmentation_report, report_from_per_class, write_report
from .scoring import scoring_record
from .volume import PerVolumeScores, summarise_volumes, volume_scores

__all__ = [
    "PerClassIoUMetric",
    "PerClassDiceMetric",
    "PerClassIoU",
    "PerClassDice",
    "MIoU",
    "MDice",
    "mIoU",
    "mDice",
    "compute_segmentation_report",
    "report_from_per_class",
    "write_report",
    "MetricsReportHandler",
    "SecondObserverAgreement",
    "AGGREGATION_NOTE",
    "PerVolumeScores",
    "summarise_volumes",
    "volume_scores",
    "scoring_record",
]
