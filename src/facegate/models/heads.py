"""Margin-based softmax heads: the combined margin (ArcFace / CosFace / SphereFace) and Partial FC.

Numerical safety, the most reported failure in this field (NaN losses under fp16):

- cosines are computed and the margin applied in **float32** whatever the autocast dtype: ``acos`` near +-1 has an
  unbounded derivative, so cosines are clamped to ``[-1 + 1e-7, 1 - 1e-7]`` first;
- beyond ``m1 * theta + m2 > pi`` the target would *increase* with the angle; there it continues as
  ``cos(theta)`` shifted to meet the margin curve (in the spirit of insightface's ``easy_margin=False`` rule), so
  the target logit is continuous and decreasing for every (m1, m2, m3);
- the cross-entropy is taken on float32 logits; :class:`NonFiniteLossError` is raised (and the trainer stops with a
  clear message) the moment a loss is not finite, instead of silently training on NaNs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

__all__ = ["CombinedMarginLoss", "NonFiniteLossError", "PartialFC"]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite."""


class CombinedMarginLoss(nn.Module):
    """``s * (cos(m1 * theta + m2) - m3)`` for the target class, ``s * cos(theta)`` for the others.

    ArcFace is ``(m1, m2, m3) = (1, 0.5, 0)``, CosFace ``(1, 0, 0.35-0.4)``, SphereFace-style ``m1 > 1``.

    Args:
        s: Scale (64 in the published recipes).
        m1: Multiplicative angular margin.
        m2: Additive angular margin (ArcFace).
        m3: Additive cosine margin (CosFace).
    """

    def __init__(self, s: float = 64.0, m1: float = 1.0, m2: float = 0.5, m3: float = 0.0) -> None:
        super().__init__()
        if s <= 0 or m1 < 1 or m2 < 0 or m3 < 0:
            raise ValueError("need s > 0, m1 >= 1, m2 >= 0, m3 >= 0")
        self.s, self.m1, self.m2, self.m3 = s, m1, m2, m3
        # Beyond this angle the target logit would start increasing again; past it the logit continues as
        # cos(theta) shifted to meet the margin curve there: continuous and decreasing for any (m1, m2, m3).
        self.theta_limit = min(math.pi, (math.pi - m2) / m1)
        self.fallback = math.cos(self.theta_limit) - (math.cos(m1 * self.theta_limit + m2) - m3)

    def forward(self, cosine: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Apply the margin.

        Args:
            cosine: ``(N, C)`` cosine similarities between embeddings and class centres.
            labels: ``(N,)`` target column per row, ``-1`` for rows whose class is not among the columns.

        Returns:
            ``(N, C)`` float32 scaled logits.
        """
        cos = cosine.float().clamp(-1.0 + 1e-7, 1.0 - 1e-7)
        rows = torch.nonzero(labels >= 0, as_tuple=True)[0]
        if rows.numel() == 0:
            return cos * self.s
        cols = labels[rows]
        target = cos[rows, cols]
        if self.m1 != 1.0 or self.m2 != 0.0:
            theta = torch.acos(target)
            margin = torch.cos(self.m1 * theta + self.m2) - self.m3
            margin = torch.where(theta <= self.theta_limit, margin, target - self.fallback)
        else:
            margin = target - self.m3
        logits = cos.index_put((rows, cols), margin)
        return logits * self.s


class PartialFC(nn.Module):
    """Class centres with a margin softmax, optionally computed on a sample of them (Partial FC, An et al. 2022).

    With ``sample_rate < 1`` each training step uses the centres of every class in the batch plus random other
    centres up to ``sample_rate * num_classes``: logits and their gradients scale with the sample, not with the
    number of identities, so 100k+ identities train on one GPU. In evaluation mode all centres are used.

    Under DDP the centres are replicated and their gradients averaged like any parameter (each rank samples its own
    negatives). insightface additionally shards centres across GPUs (model parallelism) for tens of millions of
    identities; that is not implemented here.

    Args:
        embedding_size: Embedding dimension.
        num_classes: Number of identities.
        margin: The margin head.
        sample_rate: Fraction of centres used per step, in (0, 1].
    """

    def __init__(
        self, embedding_size: int, num_classes: int, margin: CombinedMarginLoss, sample_rate: float = 1.0
    ) -> None:
        super().__init__()
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError("sample_rate must be in (0, 1]")
        self.embedding_size = embedding_size
        self.num_classes = num_classes
        self.sample_rate = sample_rate
        self.num_sample = max(1, int(sample_rate * num_classes))
        self.margin = margin
        self.weight = nn.Parameter(torch.normal(0, 0.01, (num_classes, embedding_size)))

    def _sample(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            positive = torch.unique(labels, sorted=True)
            if self.num_sample > positive.numel():
                perm = torch.rand(self.num_classes, device=labels.device)
                perm[positive] = 2.0  # positives always survive the top-k
                index = torch.topk(perm, k=self.num_sample)[1].sort()[0]
            else:
                index = positive
            remapped = torch.searchsorted(index, labels)
        return index, remapped

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean margin-softmax cross-entropy of a batch.

        Raises:
            NonFiniteLossError: If the loss is NaN or infinite.
        """
        labels = labels.long().view(-1)
        if self.training and self.sample_rate < 1.0:
            index, target = self._sample(labels)
            weight = self.weight[index]
        else:
            weight, target = self.weight, labels
        # Cosines in float32 regardless of autocast: the margin's acos needs the precision.
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            cosine = F.linear(F.normalize(embeddings.float()), F.normalize(weight.float()))
            logits = self.margin(cosine, target)
            loss = F.cross_entropy(logits, target)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"loss is {loss.item()} (not finite): the learning rate may be too high, or fp16 overflowed; "
                "lower lr, use bf16, or enable gradient clipping"
            )
        return loss

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Plain cosine logits against all centres (for classification accuracy)."""
        return F.linear(F.normalize(embeddings.float()), F.normalize(self.weight.float()))
