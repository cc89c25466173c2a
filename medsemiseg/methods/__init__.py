"""Semi-supervised methods: one module per method, each a callable the trainer runs once per iteration.

=====================  ======================================================================================
name                   what it is
=====================  ======================================================================================
``supervised``         labelled images only (lower bound; full-label upper bound when all images are labelled)
``classmix``           ClassMix with an EMA mean teacher (:class:`ClassMix`)
``fixmatch``           FixMatch with CutMix, threshold 0.95 (:class:`FixMatch`)
``unimatch``           UniMatch: two strong views + feature perturbation (:class:`UniMatch`)
``supmix``             Supervised ClassMix, the paper's SupMix, on the mean-teacher framework (:class:`SupMix`)
``sufd``               ClassMix + Sup-Unsup Feature Discriminator (:class:`SUFD`)
``supmix_sufd``        SupMix + SUFD, the paper's full method (also spelled ``supmix+sufd``)
``unimatch_supmix``    SupMix inside UniMatch: labelled ground truth pasted into both strong views and the
                       feature-perturbation stream (:class:`UniMatchSupMix`)
=====================  ======================================================================================

``fixmatch_sufd``, ``unimatch_sufd`` and ``unimatch_supmix_sufd`` are accepted too. Each module declares its methods
(name, class, FLOP floor) in ``METHODS``; :mod:`.registry` collects them, and :func:`create_method` builds any of
them by name (what the bundles' ``--method`` override uses). The classes can also be built directly with ``_target_``.
"""

from __future__ import annotations

from .base import FeatureRequest, Method
from .classmix import ClassMix
from .fixmatch import FixMatch
from .registry import canonical_method_name, create_method, method_names, requires_unlabeled
from .sufd import SUFD
from .supervised import Supervised
from .supmix import SupMix
from .unimatch import UniMatch
from .unimatch_supmix import UniMatchSupMix

__all__ = [
    "Method",
    "FeatureRequest",
    "Supervised",
    "ClassMix",
    "FixMatch",
    "UniMatch",
    "UniMatchSupMix",
    "SupMix",
    "SUFD",
    "create_method",
    "method_names",
    "canonical_method_name",
    "requires_unlabeled",
]
