"""Contrastive losses of video-text scorers: symmetric InfoNCE and MAMA's subtractive angular margin.

Both take the (videos x texts) cosine matrix of a batch whose i-th video and i-th text are a pair, and return one
loss per pair (unreduced, so a sample weighting can weigh it): the sum of the video-to-text and text-to-video
cross-entropies of that pair's row and column (as MAMA's code adds them).

MAMA (arXiv 2407.03788, official code): theta = arccos(v . t) of the L2-normalised embeddings; the positive's logit
is s * cos(theta - mu), the negatives' s * cos(theta); s = exp(log_scale) is learnt, log_scale starting at ln 100;
mu = 0.05 is the margin its code uses. Subtracting the margin from the positive's angle raises the positive's logit,
so a pair far from its caption (a possibly mismatched one) is pulled less hard than under InfoNCE. With mu = 0 the
loss is InfoNCE with the same learnt scale. (MAMA's code also moves off-diagonal pairs closer than mu; here only
the positives get the margin, as the paper writes it.) The starting scale of 100 is where a pretrained CLIP's scale
ends; from random weights it lets training settle on all-orthogonal embeddings (see `angular_margin_loss`).

```python
from vstar.train.contrastive import LogitScale, angular_margin_loss
scale = LogitScale()
per_pair = angular_margin_loss(cosine, scale(), margin=0.05)  # shape (batch,)
per_pair.mean().backward()
```
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

LOSSES = ("infonce", "angular_margin")
DEFAULT_MARGIN = 0.05
INIT_LOG_SCALE = math.log(100.0)
# arccos has an infinite derivative at +-1: keep the cosine just inside.
_ARCCOS_EPS = 1e-6


class LogitScale(nn.Module):
    """The learnt temperature of a contrastive loss: `exp(log_scale)`, `log_scale` starting at ln 100.

    Args:
        init: the starting `log_scale`.
    """

    def __init__(self, init: float = INIT_LOG_SCALE):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(float(init)))

    def forward(self) -> torch.Tensor:
        return self.log_scale.exp()


def same_text_mask(texts: list[str]) -> torch.Tensor:
    """`(B, B)` True where pair j's caption is pair i's own caption (i != j): not a negative of pair i.

    Captions that name classes repeat within a batch; counting a repeat as a negative asks the model to tell two
    identical texts apart, which only the margin can do (see `angular_margin_loss`).
    """
    index: dict[str, int] = {}
    ids = torch.tensor([index.setdefault(t, len(index)) for t in texts])
    return (ids[:, None] == ids[None, :]) & ~torch.eye(len(texts), dtype=torch.bool)


def _symmetric_cross_entropy(logits: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
    if logits.ndim != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"expected a square (videos x texts) matrix of paired rows, got shape {tuple(logits.shape)}")
    if exclude is not None:
        logits = logits.masked_fill(exclude.to(logits.device), float("-inf"))
    target = torch.arange(logits.shape[0], device=logits.device)
    video_to_text = F.cross_entropy(logits, target, reduction="none")
    text_to_video = F.cross_entropy(logits.T, target, reduction="none")
    return video_to_text + text_to_video


def infonce_loss(
    cosine: torch.Tensor, scale: torch.Tensor | float, exclude: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric InfoNCE per pair.

    Args:
        cosine: `(B, B)` cosines, `cosine[i, j]` of video i and text j; pairs on the diagonal.
        scale: the logit scale s (a tensor to learn it).
        exclude: `(B, B)` bool, True where j is not a negative of i (e.g. `same_text_mask`); diagonal False.

    Returns:
        `(B,)`: for each pair, the sum of its video-to-text and text-to-video cross-entropies of `s * cosine`.
    """
    return _symmetric_cross_entropy(scale * cosine, exclude)


def angular_margin_loss(
    cosine: torch.Tensor,
    scale: torch.Tensor | float,
    margin: float = DEFAULT_MARGIN,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """MAMA's subtractive angular margin per pair: positives' logits `s * cos(theta - margin)`, others `s * cos`.

    Args:
        cosine: `(B, B)` cosines of L2-normalised embeddings; pairs on the diagonal.
        scale: the logit scale s.
        margin: mu, in radians, subtracted from each positive pair's angle.
        exclude: `(B, B)` bool, True where j is not a negative of i; diagonal False.

    Returns:
        `(B,)`: each pair's symmetric cross-entropy, unreduced.

    The margin's bonus s * (cos(theta - mu) - cos(theta)) does not depend on what the pair shows and is largest
    near theta = pi / 2: with every embedding orthogonal to every other, each positive still leads its negatives by
    s * sin(mu) (5 at s = 100). Training from random weights at s = 100 settles there (measured on the tiny scorers:
    loss near 0, the scale growing, recall at chance); fine-tune a scorer that already aligns, as MAMA does, or
    start from a smaller scale.
    """
    diagonal = torch.diagonal(cosine)
    theta = torch.arccos(diagonal.clamp(-1 + _ARCCOS_EPS, 1 - _ARCCOS_EPS))
    positive = torch.cos(theta - margin)
    logits = cosine + torch.diag_embed(positive - diagonal)
    return _symmetric_cross_entropy(scale * logits, exclude)


def contrastive_loss(
    name: str,
    cosine: torch.Tensor,
    scale: torch.Tensor | float,
    margin: float = DEFAULT_MARGIN,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """The per-pair loss `name` (`infonce` or `angular_margin`) of a batch's cosine matrix."""
    if name == "infonce":
        return infonce_loss(cosine, scale, exclude)
    if name == "angular_margin":
        return angular_margin_loss(cosine, scale, margin, exclude)
    raise ValueError(f"Unknown contrastive loss {name!r}; choose one of {', '.join(LOSSES)}.")
