"""The contrastive losses of `vstar.train.contrastive`: InfoNCE and MAMA's angular margin."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from vstar.train.contrastive import (
    INIT_LOG_SCALE,
    LogitScale,
    angular_margin_loss,
    contrastive_loss,
    infonce_loss,
    same_text_mask,
)


def _cosine(batch: int = 6, dim: int = 8, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    video = F.normalize(torch.randn(batch, dim, generator=generator, dtype=dtype), dim=-1)
    text = F.normalize(torch.randn(batch, dim, generator=generator, dtype=dtype), dim=-1)
    return video @ text.T


def test_angular_margin_with_zero_margin_is_infonce_with_the_learnt_scale():
    cosine = _cosine().requires_grad_(True)
    scale = LogitScale()
    assert math.isclose(float(scale().detach()), 100.0, rel_tol=1e-6)
    angular = angular_margin_loss(cosine, scale().double(), margin=0.0)
    infonce = infonce_loss(cosine, scale().double())
    torch.testing.assert_close(angular, infonce, rtol=1e-10, atol=1e-10)
    # The gradients agree too, for the embeddings' cosines and the scale.
    g_angular = torch.autograd.grad(angular.sum(), [cosine, scale.log_scale])
    g_infonce = torch.autograd.grad(infonce.sum(), [cosine, scale.log_scale])
    for a, b in zip(g_angular, g_infonce, strict=True):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-8, atol=1e-8)


def test_per_pair_losses_are_symmetric_and_unreduced():
    cosine = _cosine(batch=5)
    losses = infonce_loss(cosine, 10.0)
    assert losses.shape == (5,)
    target = torch.arange(5)
    expected = F.cross_entropy(10.0 * cosine, target, reduction="none") + F.cross_entropy(
        10.0 * cosine.T, target, reduction="none"
    )
    torch.testing.assert_close(losses, expected)
    # Swapping the roles of videos and texts gives the same per-pair losses.
    torch.testing.assert_close(infonce_loss(cosine.T, 10.0), losses)
    torch.testing.assert_close(angular_margin_loss(cosine.T, 10.0), angular_margin_loss(cosine, 10.0))


def test_margin_applies_to_positives_only():
    cosine = _cosine(batch=4)
    margin = 0.3
    theta = torch.arccos(torch.diagonal(cosine))
    logits = cosine.clone()
    logits[range(4), range(4)] = torch.cos(theta - margin)
    target = torch.arange(4)
    expected = F.cross_entropy(7.0 * logits, target, reduction="none") + F.cross_entropy(
        7.0 * logits.T, target, reduction="none"
    )
    torch.testing.assert_close(angular_margin_loss(cosine, 7.0, margin), expected)
    # A pair at a wider angle than the margin gets a larger logit, so its loss falls.
    assert (angular_margin_loss(cosine, 7.0, margin) < infonce_loss(cosine, 7.0)).all()


@pytest.mark.parametrize("margin", [0.0, 0.05, 0.3])
def test_gradcheck_through_embeddings_and_scale(margin):
    generator = torch.Generator().manual_seed(1)
    video = torch.randn(4, 6, dtype=torch.float64, generator=generator, requires_grad=True)
    text = torch.randn(4, 6, dtype=torch.float64, generator=generator, requires_grad=True)
    log_scale = torch.tensor(math.log(5.0), dtype=torch.float64, requires_grad=True)

    def loss(v, t, s):
        cosine = F.normalize(v, dim=-1) @ F.normalize(t, dim=-1).T
        return angular_margin_loss(cosine, s.exp(), margin)

    assert torch.autograd.gradcheck(loss, (video, text, log_scale))
    assert torch.autograd.gradgradcheck(loss, (video, text, log_scale))


def test_aligned_pairs_keep_finite_gradients():
    # arccos' derivative is infinite at 1: a pair whose video and text embeddings coincide must not give NaN.
    embeddings = F.normalize(torch.randn(3, 4, dtype=torch.float64), dim=-1).requires_grad_(True)
    cosine = embeddings @ embeddings.T
    loss = angular_margin_loss(cosine, math.exp(INIT_LOG_SCALE)).sum()
    (grad,) = torch.autograd.grad(loss, [embeddings])
    assert torch.isfinite(grad).all()


def test_repeated_captions_are_not_negatives():
    texts = ["a red square", "a blue square", "a red square"]
    mask = same_text_mask(texts)
    assert mask.tolist() == [[False, False, True], [False, False, False], [True, False, False]]
    cosine = _cosine(batch=3)
    masked = infonce_loss(cosine, 10.0, exclude=mask)
    # Pair 0 no longer counts pair 2's caption or clip as a negative; pair 1 (no repeat) keeps all of them.
    logits = 10.0 * cosine
    row0 = torch.logsumexp(logits[0, [0, 1]], 0) - logits[0, 0]
    col0 = torch.logsumexp(logits[[0, 1], 0], 0) - logits[0, 0]
    torch.testing.assert_close(masked[0], row0 + col0)
    torch.testing.assert_close(masked[1], infonce_loss(cosine, 10.0)[1])
    assert contrastive_loss("angular_margin", cosine, 10.0, exclude=mask).shape == (3,)


def test_unknown_loss_names_the_choices():
    with pytest.raises(ValueError, match="infonce, angular_margin"):
        contrastive_loss("arcface", _cosine(), 1.0)
