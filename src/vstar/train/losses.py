"""Token-weighted SFT losses: cross-entropy, TaiLr, and vstar's adaptive TaiLr.

`vstar train --loss_type tailr` weights each supervised token's negative log-likelihood by TaiLr's
(arXiv 2302.13344, official code) total-variation weight

    w = p / (gamma + (1 - gamma) * p),    w clamped to [w_min, 1], no gradient through w,

where p is the model's probability of the target token. gamma = 0 gives w = 1 (plain cross-entropy); a larger gamma
down-weights the tokens the model finds unlikely, which is where wrong labels concentrate. With label smoothing
eps, as in TaiLr's code, the token loss is `(1 - eps) * w * nll + eps / V * sum_v -log p_v` (the smoothing term is
not weighted).

`adaptive_tailr` is vstar's own variant, not AdaTaiLr's (Video DataFlywheel, arXiv 2409.19532), whose formula is not
published: gamma is set once per training from a measured noise estimate e in [0, 1] as
`gamma = clip(e, gamma_min, gamma_max)` (see `adaptive_gamma` and docs/noise.md).

Normalisation: the weighted token losses are summed over every supervised token of the batch and divided by the
number of supervised tokens, which under gradient accumulation and DDP is transformers' `num_items_in_batch` (the
tokens of all micro-batches of the optimizer step on all processes), exactly as TRL averages cross-entropy. The
weights are not renormalised: a batch of unlikely tokens trains with a smaller loss, as in TaiLr.

```bash
vstar train --config recipes/demo/config_shapes_tiny.yaml --loss_type tailr --tailr_gamma 0.1 --dataset DIR
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

LOSS_TYPES = ("ce", "tailr", "adaptive_tailr")
IGNORE_INDEX = -100


def tailr_weights(log_probs: torch.Tensor, gamma: float, min_weight: float) -> torch.Tensor:
    """TaiLr's weight `p / (gamma + (1 - gamma) p)` of each token, clamped to `[min_weight, 1]`, without gradient.

    Args:
        log_probs: log-probabilities of the target tokens (any shape).
        gamma: TaiLr's gamma in [0, 1]; 0 gives weights of 1.
        min_weight: the smallest weight.
    """
    with torch.no_grad():
        p = log_probs.detach().to(torch.promote_types(log_probs.dtype, torch.float32)).exp()
        # Computed in log space as TaiLr's code does: p / (gamma + (1 - gamma) p) underflows for tiny p otherwise.
        weights = (p.log() - (gamma + (1 - gamma) * p).clamp_min(1e-30).log()).exp()
        return weights.clamp(min=min_weight, max=1.0).to(log_probs.dtype)


def adaptive_gamma(noise_estimate: float, gamma_min: float, gamma_max: float) -> float:
    """vstar's adaptive TaiLr gamma (not AdaTaiLr's formula): the noise estimate clipped to `[gamma_min, gamma_max]`.

    Args:
        noise_estimate: the estimated share of wrong training answers, in [0, 1] (in `vstar cycle`: the share of the
            cycle's clips whose direct answer by the previous model failed verification).
        gamma_min, gamma_max: the range gamma is kept in.
    """
    return float(min(max(noise_estimate, gamma_min), gamma_max))


def cycle_noise_estimate(stats: Mapping[str, Any] | None) -> float | None:
    """vstar's noise estimate of a loop cycle's accepted answers: the share of its clips whose direct answer by the
    previous model failed verification (1 - the cycle's direct yield), or None when the cycle has no such count.

    The weaker the model that wrote a cycle's answers, the more of its accepted rationales are right by luck or only
    thanks to the hint; so gamma follows the generator's measured error and anneals as the flywheel improves it.
    """
    direct_yield = (stats or {}).get("direct_yield")
    return None if direct_yield is None else float(min(max(1.0 - direct_yield, 0.0), 1.0))


@dataclass
class TokenLoss:
    """A token-weighted loss: TaiLr weights with `gamma` (0: cross-entropy) and optional label smoothing.

    Args:
        gamma: TaiLr's gamma (0 disables the weighting).
        min_weight: TaiLr's smallest token weight.
        label_smoothing: epsilon of label smoothing (0: none).
    """

    gamma: float = 0.0
    min_weight: float = 0.0
    label_smoothing: float = 0.0

    @property
    def needs_logits(self) -> bool:
        """Label smoothing needs every vocabulary log-probability, not only the target's."""
        return self.label_smoothing > 0

    def token_losses(
        self, log_probs: torch.Tensor, mask: torch.Tensor, smooth: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-token losses, zero where `mask` is false.

        Args:
            log_probs: the target tokens' log-probabilities `(B, T)`, with gradient.
            mask: which positions are supervised `(B, T)`.
            smooth: `sum_v -log p_v` per position `(B, T)`, divided by the vocabulary size; needed with label
                smoothing.
        """
        nll = -log_probs
        if self.gamma > 0:
            nll = nll * tailr_weights(log_probs, self.gamma, self.min_weight)
        if self.label_smoothing > 0:
            if smooth is None:
                raise ValueError("label smoothing needs the mean over the vocabulary of -log p (`smooth`).")
            nll = (1 - self.label_smoothing) * nll + self.label_smoothing * smooth
        return nll.masked_fill(~mask, 0.0)


def shifted_log_probs(
    logits: torch.Tensor, labels: torch.Tensor, with_smooth: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Next-token log-probabilities of the labels from full logits, as the causal LM loss shifts them.

    Args:
        logits: `(B, T, V)`.
        labels: `(B, T)` with `-100` on unsupervised positions.
        with_smooth: also return the mean over the vocabulary of `-log p` (label smoothing).

    Returns:
        `(log_probs, mask, smooth, entropy, is_top1)`, each `(B, T - 1)`; `smooth` is None unless asked.
    """
    logits = logits[:, :-1].float()
    targets = labels[:, 1:].to(logits.device)
    mask = targets != IGNORE_INDEX
    log_softmax = torch.log_softmax(logits, dim=-1)
    log_probs = log_softmax.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1).masked_fill(~mask, 0.0)
    smooth = -log_softmax.mean(-1) if with_smooth else None
    with torch.no_grad():
        entropy = -(log_softmax.exp() * log_softmax).sum(-1).masked_fill(~mask, 0.0)
        is_top1 = (logits.argmax(-1) == targets) & mask
    return log_probs, mask, smooth, entropy, is_top1


def per_sample_mean(token_losses: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's mean token loss `(B,)` and its number of supervised tokens `(B,)`."""
    counts = mask.sum(-1)
    return token_losses.sum(-1) / counts.clamp(min=1), counts


def reduce_tokens(token_losses: torch.Tensor, mask: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """Sum of the token losses over the batch divided by `num_items_in_batch` (the step's supervised tokens on
    every process, as transformers counts them) or, without it, by this batch's supervised tokens."""
    total = mask.sum() if num_items_in_batch is None else num_items_in_batch
    return token_losses.sum() / torch.as_tensor(total, device=token_losses.device).clamp(min=1)
