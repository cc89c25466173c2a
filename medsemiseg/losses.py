"""Losses for the unlabelled terms of the semi-supervised methods.

Supervised terms use MONAI's ``DiceCELoss`` directly (see :func:`default_supervised_loss`). The unlabelled terms
need what MONAI's losses do not offer: a per-pixel *confidence mask* (pixels whose pseudo-label confidence is under
the threshold are ignored) or a per-pixel weight. Both functions here take integer targets ``(B, *spatial)`` (the
argmax pseudo-label, not one-hot) and a mask/weight of the same shape, and stay on the device: no ``.item()``, no
host round trip.

Formulations follow the reference implementations (BASELINES.md):

- :func:`masked_cross_entropy`: ``sum(CE * w) / N``. With ``normalize="all"`` (default) ``N`` is the number of
  pixels, as in UniMatch's ``fixmatch.py``/``unimatch.py`` (``loss.sum() / (ignore != 255).sum()``, and no pixel is
  ignored by padding here) and as in ClassMix's pixel-weighted CE (mean over all pixels). ``normalize="valid"``
  divides by ``sum(w)`` instead (a mean over the confident pixels only).
- :func:`masked_dice_loss`: UniMatch's medical ``DiceLoss`` with ``ignore``: per class, intersection and squared
  sums pooled over the whole batch and over the valid pixels only, ``1 - (2I + s) / (P + T + s)`` with
  ``s = 1e-5``, averaged over all classes (background included).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["masked_cross_entropy", "masked_dice_loss", "default_supervised_loss", "unsupervised_loss"]


def _check_shapes(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, name: str) -> None:
    if logits.ndim < 3:
        raise ValueError(f"{name}: logits must be (B, num_classes, *spatial), got shape {tuple(logits.shape)}.")
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            f"{name}: target must be an integer map (B, *spatial) = {tuple(logits.shape[:1] + logits.shape[2:])} "
            f"(argmax pseudo-label, not one-hot, no channel dim), got {tuple(target.shape)}."
        )
    if weight is not None and weight.shape != target.shape:
        raise ValueError(f"{name}: mask/weight must have the target's shape {tuple(target.shape)}, got {tuple(weight.shape)}.")


def masked_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | float | None = None,
    normalize: str = "all",
    eps: float = 1e-6,
) -> torch.Tensor:
    """Per-pixel cross entropy, multiplied by a mask/weight, summed and normalised.

    Args:
        logits: ``(B, K, *spatial)`` raw scores of the student.
        target: ``(B, *spatial)`` integer pseudo-label.
        weight: ``(B, *spatial)`` bool confidence mask or float per-pixel weight, a python/0-dim scalar weight
            (ClassMix's "fraction of confident pixels"), or ``None`` (plain mean CE).
        normalize: ``"all"`` divides by the number of pixels (UniMatch / ClassMix), ``"valid"`` by ``sum(weight)``.
        eps: guards the ``"valid"`` division when no pixel is confident (the loss is then 0, with a gradient of 0).
    """
    if normalize not in ("all", "valid"):
        raise ValueError(f"masked_cross_entropy(normalize=...) must be 'all' or 'valid', got {normalize!r}.")
    w = weight if isinstance(weight, torch.Tensor) and weight.ndim > 0 else None
    _check_shapes(logits, target, w, "masked_cross_entropy")
    ce = F.cross_entropy(logits.float(), target.long(), reduction="none")
    if weight is None:
        return ce.mean()
    if isinstance(weight, torch.Tensor):
        weight = weight.to(device=ce.device, dtype=ce.dtype)
    weighted = ce * weight
    if normalize == "all":
        return weighted.sum() / ce.numel()
    denom = weight.sum() if isinstance(weight, torch.Tensor) and weight.ndim > 0 else weight * ce.numel()
    return weighted.sum() / (denom + eps)


def masked_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    softmax: bool = True,
    smooth: float = 1e-5,
    include_background: bool = True,
) -> torch.Tensor:
    """Soft Dice loss over the pixels where ``mask`` is true, pooled over the batch, averaged over classes.

    Args:
        logits: ``(B, K, *spatial)`` student scores (``softmax=True``) or probabilities (``softmax=False``).
        target: ``(B, *spatial)`` integer pseudo-label.
        mask: ``(B, *spatial)`` bool/float; pixels with 0 are ignored (UniMatch's ``ignore = conf < thresh``
            inverted). ``None`` uses every pixel.
        softmax: apply softmax over the class channel first.
        smooth: the reference's ``1e-5`` in numerator and denominator; with no valid pixel the loss is 0.
        include_background: average over all ``K`` classes (reference) or over classes ``1..K-1``.
    """
    _check_shapes(logits, target, mask, "masked_dice_loss")
    num_classes = logits.shape[1]
    probs = torch.softmax(logits.float(), dim=1) if softmax else logits.float()
    onehot = F.one_hot(target.long().clamp(0, num_classes - 1), num_classes).movedim(-1, 1).to(probs.dtype)
    if mask is not None:
        valid = mask.to(device=probs.device, dtype=probs.dtype).unsqueeze(1)
        probs = probs * valid
        onehot = onehot * valid
    reduce_dims = [0] + list(range(2, probs.ndim))
    intersect = (probs * onehot).sum(reduce_dims)
    p_sum = (probs * probs).sum(reduce_dims)
    t_sum = (onehot * onehot).sum(reduce_dims)
    dice = (2 * intersect + smooth) / (p_sum + t_sum + smooth)
    loss = 1.0 - dice
    if not include_background:
        loss = loss[1:]
    return loss.mean()


def unsupervised_loss(
    kind: str, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | float | None
) -> torch.Tensor:
    """Dispatch ``"ce"`` -> :func:`masked_cross_entropy`, ``"dice"`` -> :func:`masked_dice_loss`.

    ``"dice"`` takes a (B, *spatial) mask; a scalar weight multiplies the Dice loss instead.
    """
    if kind == "ce":
        return masked_cross_entropy(logits, target, mask)
    if kind == "dice":
        if mask is None or (isinstance(mask, torch.Tensor) and mask.ndim == target.ndim):
            return masked_dice_loss(logits, target, mask)
        return masked_dice_loss(logits, target, None) * mask
    if kind == "ce+dice":
        return 0.5 * (unsupervised_loss("ce", logits, target, mask) + unsupervised_loss("dice", logits, target, mask))
    raise ValueError(f"unsupervised loss must be one of 'ce', 'dice', 'ce+dice', got {kind!r}.")


def default_supervised_loss():
    """MONAI ``DiceCELoss(to_onehot_y=True, softmax=True)``: logits ``(B,K,...)`` against labels ``(B,1,...)``.

    DiceCE's default is ``(Dice + CE)`` (weights 1, 1) with a plain (unsquared, per-sample) Dice. UniMatch's medical
    reference uses ``(CE + DiceLoss) / 2`` whose Dice squares the prediction in the denominator and sums over the
    whole batch; ``DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=0.5, lambda_ce=0.5, squared_pred=True,
    batch=True)`` passed as the method's ``sup_loss`` reproduces it exactly (``tests/test_methods.py`` pins this);
    the weights alone do not. We keep MONAI's default as the bundles' supervised loss.
    """
    from monai.losses import DiceCELoss

    return DiceCELoss(to_onehot_y=True, softmax=True)
