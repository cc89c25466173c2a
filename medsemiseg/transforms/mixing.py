"""Mixing operations of the semi-supervised methods: CutMix boxes, ClassMix class masks, SupMix paste.

All functions are pure and batched: they work on whole ``(B, ...)`` tensors on the input's device, with no
Python loop over pixels or samples and no device-to-host copy (nothing here calls ``.item()`` or ``.cpu()``).

Randomness comes from an optional ``torch.Generator``: with a seeded generator the result is reproducible; with
``None`` the global torch RNG of the target device is used. A generator lives on one device; when it is on a
different device than the data (typically a CPU generator and CUDA data), the few per-sample random numbers
(``B`` or ``B x num_classes`` of them) are drawn on the generator's device and copied to the data's device,
a small asynchronous host-to-device copy, never a synchronising round trip.

Layouts follow ``docs/architecture.md``: images ``(B, C, X, Y)``, label maps ``(B, X, Y)`` or ``(B, 1, X, Y)``,
masks ``(B, X, Y)`` booleans, confidences ``(B, X, Y)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["cutmix_box_mask", "classmix_mask", "select_supmix_classes", "supmix_paste", "mix", "classes_present"]

# Every CutMix sample draws this many aspect-ratio candidates, keeps the first whose box fits in the image, then
# places it uniformly among the positions where it fits (the box is clipped to the image if none fits, probability
# below 1e-6 for the default ranges). UniMatch's obtain_cutmix_box instead redraws ratio *and* position together
# until the box fits, which favours ratios near 1: same box orientation (extent sqrt(s*r) along Y, the rows) and the
# same mean area, but a different aspect distribution -- median Y/X extent 1.56 in UniMatch vs 1.77 here (20 000
# boxes at 64 px, area 0.02-0.4, ratio 0.3-3.3). Kept: the benchmark tables were measured with this one.
_RATIO_CANDIDATES = 16


def _rand(shape: Sequence[int], device: torch.device | str | None, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform [0, 1) numbers on ``device``, drawn from ``generator`` (on its own device) when one is given."""
    if generator is None:
        return torch.rand(tuple(shape), device=device)
    return torch.rand(tuple(shape), generator=generator, device=generator.device).to(device, non_blocking=True)


def _as_2d_labels(labels: torch.Tensor, name: str) -> torch.Tensor:
    """``(B, X, Y)`` or ``(B, 1, X, Y)`` label map -> ``(B, X, Y)``."""
    if labels.ndim == 4 and labels.shape[1] == 1:
        return labels[:, 0]
    if labels.ndim == 3:
        return labels
    raise ValueError(f"{name} must be a label map of shape (B, X, Y) or (B, 1, X, Y), got {tuple(labels.shape)}.")


def classes_present(labels: torch.Tensor, num_classes: int, ignore_index: int | None = None) -> torch.Tensor:
    """Bool ``(B, num_classes)``: which classes occur in each label map.

    Values outside ``0..num_classes-1`` (and ``ignore_index``) count as no class.
    """
    lab = _as_2d_labels(labels, "labels").long()
    b = lab.shape[0]
    flat = lab.reshape(b, -1)
    valid = (flat >= 0) & (flat < num_classes)
    if ignore_index is not None:
        valid &= flat != ignore_index
    idx = torch.where(valid, flat, torch.full_like(flat, num_classes))  # invalid -> overflow bin
    hits = torch.zeros(b, num_classes + 1, device=lab.device, dtype=torch.float32)
    hits.scatter_(1, idx, 1.0)
    return hits[:, :num_classes] > 0


def _random_subset(candidates: torch.Tensor, k: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Per row, choose ``k[b]`` of the ``True`` entries of ``candidates (B, K)`` uniformly at random.

    Every candidate gets a uniform score and non-candidates score 2 (after all candidates); a class is chosen when
    its rank among the row's scores is below ``k[b]``.
    """
    scores = _rand(candidates.shape, candidates.device, generator)
    scores = torch.where(candidates, scores, torch.full_like(scores, 2.0))
    ranks = scores.argsort(dim=1).argsort(dim=1)
    return candidates & (ranks < k[:, None])


def cutmix_box_mask(
    batch_size: int,
    spatial_size: Sequence[int],
    p: float = 0.5,
    area: Sequence[float] = (0.02, 0.4),
    ratio: Sequence[float] = (0.3, 1 / 0.3),
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One random CutMix box per sample, as UniMatch's ``obtain_cutmix_box``: Bool ``(B, X, Y)``.

    With probability ``p`` a sample gets a box (otherwise an all-False mask). The box covers a fraction
    ``s ~ U(area)`` of the image with aspect ratio ``r ~ U(ratio)``: extents ``floor(sqrt(s*X*Y/r))`` along X and
    ``floor(sqrt(s*X*Y*r))`` along Y, at a uniformly random position where it fits entirely in the image.
    ``True`` marks the pixels taken from the mixing source (see :func:`mix`).
    """
    if len(spatial_size) != 2:
        raise ValueError(f"cutmix_box_mask(spatial_size=...) must be (X, Y), got {tuple(spatial_size)}.")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"cutmix_box_mask(p={p}) must be a probability in [0, 1].")
    if not 0.0 < area[0] <= area[1] <= 1.0 or not 0.0 < ratio[0] <= ratio[1]:
        raise ValueError(f"cutmix_box_mask: need 0 < area[0] <= area[1] <= 1 and 0 < ratio[0] <= ratio[1], got {area}, {ratio}.")
    sx, sy = int(spatial_size[0]), int(spatial_size[1])
    b = int(batch_size)
    u = _rand((b, 4 + _RATIO_CANDIDATES), device, generator)
    apply = u[:, 0] < p
    s = (area[0] + (area[1] - area[0]) * u[:, 1]) * (sx * sy)
    r = ratio[0] + (ratio[1] - ratio[0]) * u[:, 4:]  # (B, candidates)
    w = torch.floor(torch.sqrt(s[:, None] / r))  # extent along X
    h = torch.floor(torch.sqrt(s[:, None] * r))  # extent along Y
    fits = (w <= sx) & (h <= sy)
    first = torch.where(fits.any(dim=1), fits.float().argmax(dim=1), torch.zeros_like(apply, dtype=torch.long))
    w = w.gather(1, first[:, None])[:, 0].clamp(0, sx)
    h = h.gather(1, first[:, None])[:, 0].clamp(0, sy)
    x0 = torch.floor(u[:, 2] * (sx - w + 1))
    y0 = torch.floor(u[:, 3] * (sy - h + 1))
    xs = torch.arange(sx, device=apply.device, dtype=w.dtype)
    ys = torch.arange(sy, device=apply.device, dtype=h.dtype)
    in_x = (xs[None] >= x0[:, None]) & (xs[None] < (x0 + w)[:, None])  # (B, X)
    in_y = (ys[None] >= y0[:, None]) & (ys[None] < (y0 + h)[:, None])  # (B, Y)
    return in_x[:, :, None] & in_y[:, None, :] & apply[:, None, None]


def classmix_mask(
    labels: torch.Tensor,
    num_classes: int,
    generator: torch.Generator | None = None,
    ignore_index: int | None = None,
) -> torch.Tensor:
    """ClassMix mask: for each image, ``floor(n / 2)`` of its ``n`` present classes chosen at random.

    As ClassMix's ``trainSSL.py`` (which picks ``(n - n % 2) / 2`` of ``torch.unique(argmax)``), background
    included. ``labels`` is a (pseudo-)label map ``(B, X, Y)`` or ``(B, 1, X, Y)``; pixels with ``ignore_index``
    or out-of-range values are never in the mask. Returns Bool ``(B, X, Y)``, ``True`` on the chosen classes.
    """
    lab = _as_2d_labels(labels, "classmix_mask(labels)").long()
    present = classes_present(lab, num_classes, ignore_index)
    k = present.sum(dim=1) // 2
    chosen = _random_subset(present, k, generator)
    return _class_mask(lab, chosen, ignore_index)


def _class_mask(lab: torch.Tensor, chosen: torch.Tensor, ignore_index: int | None = None) -> torch.Tensor:
    """Bool ``(B, X, Y)``: ``chosen[b, lab[b, x, y]]``, False where ``lab`` is out of range or ignored."""
    b, k = chosen.shape
    flat = lab.reshape(lab.shape[0], -1)
    valid = (flat >= 0) & (flat < k)
    if ignore_index is not None:
        valid &= flat != ignore_index
    picked = chosen.gather(1, flat.clamp(0, k - 1)) & valid
    return picked.reshape(lab.shape)


def select_supmix_classes(
    labels: torch.Tensor,
    num_classes: int,
    mode: str = "fixed",
    classes: Sequence[int] | None = None,
    include_background: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Which ground-truth classes SupMix pastes from each labelled image: Bool ``(B, num_classes)``.

    Modes:
        ``"fixed"``: the class ids in ``classes`` (the paper's hand-chosen minority classes: vessels on CHASE_DB1,
            ground-glass on COVID-19 CT). Given ids are used as they are, background included if listed.
        ``"all"``: every foreground class present in the image (and background if ``include_background``).
        ``"random_half"``: ``ceil(n / 2)`` of the ``n`` present candidate classes, chosen at random per image.
            Ceil rather than ClassMix's floor because background is normally excluded here: with a single
            foreground class (a binary task) floor would never paste anything.

    The result is restricted to the classes present in each image (an absent class would paste nothing), so
    ``chosen.sum(1)`` is the number of classes actually pasted. Feed it to :func:`supmix_paste`.
    """
    lab = _as_2d_labels(labels, "select_supmix_classes(labels)").long()
    present = classes_present(lab, num_classes)
    mode = str(mode).lower()
    if mode == "fixed":
        if classes is None or len(classes) == 0:
            raise ValueError(
                "select_supmix_classes(mode='fixed') needs classes=[...] (the class ids to paste, e.g. [1] for "
                "vessels); or use mode='all' / 'random_half'."
            )
        bad = [c for c in classes if not 0 <= int(c) < num_classes]
        if bad:
            raise ValueError(f"select_supmix_classes(classes={list(classes)}): ids {bad} are outside 0..{num_classes - 1}.")
        wanted = torch.zeros(num_classes, dtype=torch.bool, device=lab.device)
        wanted[torch.as_tensor([int(c) for c in classes], device=lab.device)] = True
        return present & wanted[None]
    candidates = present.clone()
    if not include_background:
        candidates[:, 0] = False
    if mode == "all":
        return candidates
    if mode in ("random_half", "half", "random"):
        k = (candidates.sum(dim=1) + 1) // 2
        return _random_subset(candidates, k, generator)
    raise ValueError(f"select_supmix_classes(mode={mode!r}): use 'fixed', 'all' or 'random_half'.")


def supmix_paste(
    unlabeled_image: torch.Tensor,
    pseudo_label: torch.Tensor,
    confidence: torch.Tensor,
    labeled_image: torch.Tensor,
    labeled_label: torch.Tensor,
    chosen: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """SupMix: paste the chosen ground-truth classes of labelled images onto unlabelled images.

    With ``M = chosen[b, y_l]`` (the labelled image's pixels of the chosen classes):

    * mixed image ``M * l + (1 - M) * u``;
    * mixed target ``M * y_l + (1 - M) * p_u`` (pasted pixels carry their ground-truth label);
    * mixed confidence 1 inside ``M``, ``c_u`` outside (pasted labels are certain).

    Args:
        unlabeled_image: ``(B, C, X, Y)``.
        pseudo_label: ``(B, X, Y)`` or ``(B, 1, X, Y)`` integer pseudo-label of the unlabelled images.
        confidence: ``(B, X, Y)`` or ``(B, 1, X, Y)`` confidence of the pseudo-label.
        labeled_image: ``(B_l, C, X, Y)``.
        labeled_label: ``(B_l, X, Y)`` or ``(B_l, 1, X, Y)`` ground truth; out-of-range values are never pasted.
        chosen: Bool ``(B_l, num_classes)`` from :func:`select_supmix_classes`.

    When the labelled batch is smaller or larger than the unlabelled one (``B_l != B``), unlabelled sample ``b``
    receives labelled sample ``b % B_l``.

    Returns:
        ``(mixed_image, mixed_target, mixed_confidence, mask)``; the target and confidence keep the layout of
        ``pseudo_label`` and ``confidence``, ``mask`` is Bool ``(B, X, Y)``.
    """
    if unlabeled_image.ndim != 4 or labeled_image.ndim != 4:
        raise ValueError(
            f"supmix_paste: images must be (B, C, X, Y); got unlabeled {tuple(unlabeled_image.shape)}, "
            f"labeled {tuple(labeled_image.shape)}."
        )
    b = unlabeled_image.shape[0]
    b_l = labeled_image.shape[0]
    p_u = _as_2d_labels(pseudo_label, "supmix_paste(pseudo_label)")
    c_u = _as_2d_labels(confidence, "supmix_paste(confidence)")
    y_l = _as_2d_labels(labeled_label, "supmix_paste(labeled_label)")
    spatial = tuple(unlabeled_image.shape[2:])
    for name, t in (("pseudo_label", p_u), ("confidence", c_u)):
        if tuple(t.shape) != (b, *spatial):
            raise ValueError(f"supmix_paste({name}) has shape {tuple(t.shape)}; expected {(b, *spatial)} to match unlabeled_image.")
    if tuple(labeled_image.shape[1:]) != tuple(unlabeled_image.shape[1:]):
        raise ValueError(
            f"supmix_paste: labeled_image {tuple(labeled_image.shape)} and unlabeled_image "
            f"{tuple(unlabeled_image.shape)} differ in channels or spatial size; crop/resize both views to one size."
        )
    if tuple(y_l.shape) != (b_l, *spatial):
        raise ValueError(f"supmix_paste(labeled_label) has shape {tuple(y_l.shape)}; expected {(b_l, *spatial)}.")
    if chosen.ndim != 2 or chosen.shape[0] != b_l:
        raise ValueError(f"supmix_paste(chosen) must be Bool (B_l={b_l}, num_classes), got {tuple(chosen.shape)}.")
    if b_l != b:
        idx = torch.arange(b, device=labeled_image.device) % b_l
        labeled_image, y_l, chosen = labeled_image[idx], y_l[idx], chosen[idx]

    mask = _class_mask(y_l.long(), chosen.to(torch.bool))
    mixed_image = torch.where(mask[:, None], labeled_image.to(unlabeled_image.dtype), unlabeled_image)
    mixed_target = torch.where(mask, y_l.to(p_u.dtype), p_u)
    mixed_conf = torch.where(mask, torch.ones_like(c_u), c_u)
    if pseudo_label.ndim == 4:
        mixed_target = mixed_target[:, None]
    if confidence.ndim == 4:
        mixed_conf = mixed_conf[:, None]
    return mixed_image, mixed_target, mixed_conf, mask


def mix(target: torch.Tensor, source: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Where ``mask`` is True take ``source``, elsewhere ``target`` (CutMix / ClassMix composition).

    ``mask`` is ``(B, X, Y)`` or ``(B, 1, X, Y)`` and is broadcast over the channels of ``(B, C, X, Y)`` tensors;
    ``target`` and ``source`` must have the same shape. Works for images, soft predictions, label maps and
    confidences alike.
    """
    if target.shape != source.shape:
        raise ValueError(f"mix: target {tuple(target.shape)} and source {tuple(source.shape)} must have the same shape.")
    m = mask.to(torch.bool)
    if m.ndim == target.ndim - 1:
        m = m.unsqueeze(1)
    elif m.ndim == target.ndim + 1 and m.shape[1] == 1:
        m = m[:, 0]
    if m.ndim != target.ndim:
        raise ValueError(f"mix: mask {tuple(mask.shape)} does not broadcast to {tuple(target.shape)}.")
    return torch.where(m, source, target)
