"""Support for the MONAI Label app in ``bundles/monailabel_app`` that needs no MONAI Label to run or test.

- :mod:`.install`: ``python -m medsemiseg.labelapp install bundles/covid`` copies a bundle into the app (what
  serving and training need), replacing an earlier copy.
- :mod:`.params`: the keys a ``POST /train/<model>`` request may set, checked as data (a value MONAI would evaluate
  as code or a reference is refused).
- :mod:`.train`: training a served bundle from MONAI Label's datastore -- studies with a final label are the
  labelled set (validation taken from them), every other study is unlabelled -- and serving the best validated
  model afterwards.

The MONAI Label classes (``TrainTask``, ``InferTask``) live in the app and call into these modules.
"""
