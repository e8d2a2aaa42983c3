"""The GAN losses: the blog's BCELoss(Sigmoid(x)) and BCE with logits, each per member of a pack or averaged."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def blog_bce(logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The blog's BCELoss(Sigmoid(x)), computed by the built-in (log clamped at -100, its gradient eps).

    The built-in raises on a NaN input on the CPU and trips a device-side assert on CUDA (which ends
    the process). A diverged run must become a Diverged error instead, so NaNs are kept out of the
    built-in and added back afterwards: the loss is NaN exactly when an input is.
    """
    p = torch.sigmoid(logits)
    safe = torch.nan_to_num(p, nan=0.5)
    if reduction == "none":
        return F.binary_cross_entropy(safe, target, reduction="none") + (p - safe) * 0
    return F.binary_cross_entropy(safe, target) + (p - safe).sum() * 0


def gan_loss(name: str, reduction: str = "mean") -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Losses are computed in fp32, outside autocast. ``reduction="none"``: one loss per logit."""
    if name == "bce":
        return lambda logits, target: blog_bce(logits.float(), target, reduction)
    return lambda logits, target: F.binary_cross_entropy_with_logits(logits.float(), target, reduction=reduction)
