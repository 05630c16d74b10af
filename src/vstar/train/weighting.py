"""Meta-weighting of training samples (Meta-Weight-Net, as MAMA uses it): a small MLP maps each sample's loss to a
weight, meta-trained so that a one-step look-ahead of the model does best on a clean meta batch.

One training step with `MetaWeighting.step`:

1. the per-sample losses `L_i` of the training batch under the current weights `theta`;
2. weights `w_i = MLP(L_i)` (normalised over the batch), and a virtual SGD step
   `theta' = theta - lr * grad_theta sum_i w_i L_i`, with the graph kept so that `theta'` depends on the MLP;
3. the unweighted mean loss of the look-ahead model `theta'` on a clean meta batch (`torch.func.functional_call`),
   backpropagated to the MLP only, and one optimizer step of the MLP;
4. the new weights of the same losses (no gradient, normalised to mean 1): the caller's real step trains on
   `sum_i w_i L_i` (the losses of step 1 keep their graph, so no second forward is needed).

The piece knows nothing of the model's task: it takes the module, its trainable named parameters (LoRA parameters
only, for a LoRA run), a per-sample loss function and the two batches. The SFT trainer (`vstar.train.sft`) and any
other trainer use it the same way:

```python
from vstar.train.weighting import MetaWeighting

weighting = MetaWeighting(hidden_size=64, learning_rate=1e-3)
params = {name: p for name, p in model.named_parameters() if p.requires_grad}

def sample_losses(forward, batch):  # forward: the model under some parameters
    logits = forward(batch["x"])
    return torch.nn.functional.cross_entropy(logits, batch["y"], reduction="none")

step = weighting.step(model, params, sample_losses, batch, meta_batch, inner_lr=1e-2)
(step.weights * step.losses).mean().backward()  # the real, weighted step
optimizer.step()
```

Under `torch.distributed` the MLP's gradients are averaged over the processes before its step, so every process
keeps the same MLP (build it with the same seed everywhere).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

# `loss_fn(forward, batch) -> (B,)`: per-sample losses of `batch` computed by calling `forward` (the model under the
# parameters being evaluated) as one would call the model.
SampleLossFn = Callable[[Callable[..., Any], Any], torch.Tensor]


class MetaWeightNet(nn.Module):
    """An MLP 1 -> hidden -> 1 with a ReLU and a sigmoid: a sample's loss in, its weight in (0, 1) out.

    Args:
        hidden_size: the hidden width (64 in Meta-Weight-Net and MAMA).
    """

    def __init__(self, hidden_size: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, hidden_size), nn.ReLU(), nn.Linear(hidden_size, 1), nn.Sigmoid())

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        return self.net(losses.reshape(-1, 1).to(self.net[0].weight.dtype)).reshape(-1)


def normalised(weights: torch.Tensor, total: float = 1.0) -> torch.Tensor:
    """`weights` rescaled to sum to `total` (a batch of zeros stays zero)."""
    return weights * (total / weights.sum().clamp_min(1e-12))


@dataclass
class MetaStep:
    """What one meta step measured.

    Attributes:
        losses: the per-sample training losses `(B,)` under the current parameters, with their graph (unless the
            step was asked not to keep it).
        weights: the updated MLP's weights of those losses, without gradient, normalised to mean 1 over the batch,
            so that `(weights * losses).mean()` has the scale of the unweighted mean.
        raw_weights: the updated MLP's outputs in (0, 1), before normalisation.
        meta_loss: the look-ahead model's unweighted mean loss on the meta batch.
    """

    losses: torch.Tensor
    weights: torch.Tensor
    raw_weights: torch.Tensor
    meta_loss: float


class MetaWeighting:
    """The weight net, its optimizer and the look-ahead step.

    Args:
        hidden_size: the weight net's hidden width.
        learning_rate: Adam learning rate of the weight net (Meta-Weight-Net: 1e-3).
        weight_decay: Adam weight decay of the weight net (Meta-Weight-Net: 1e-4).
        seed: seed of the weight net's initialisation (the same on every process).
        device: where the weight net lives (the model's device).
    """

    def __init__(
        self,
        hidden_size: int = 64,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
        seed: int = 0,
        device: torch.device | str | None = None,
    ):
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        self.net = MetaWeightNet(hidden_size)
        torch.random.set_rng_state(generator_state)  # the model's own random stream is left as it was
        if device is not None:
            self.net.to(device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=learning_rate, weight_decay=weight_decay)

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        """The current weights of per-sample `losses`, without gradient, normalised to mean 1."""
        with torch.no_grad():
            return normalised(self.net(losses.detach()), total=losses.numel())

    def step(
        self,
        module: nn.Module,
        params: Mapping[str, torch.Tensor],
        loss_fn: SampleLossFn,
        batch: Any,
        meta_batch: Any,
        inner_lr: float,
        forward: Callable[..., Any] | None = None,
        meta_loss_fn: SampleLossFn | None = None,
        keep_graph: bool = True,
    ) -> MetaStep:
        """Update the weight net by one look-ahead step and weigh `batch`'s samples with it.

        Args:
            module: the model; `torch.func.functional_call(module, ...)` runs the look-ahead.
            params: the trainable parameters by name as `module.named_parameters()` names them (for LoRA, the
                adapter's only); they get no `.grad` from this step.
            loss_fn: per-sample losses `(B,)` of a batch: `loss_fn(forward, batch)`.
            batch: the training batch.
            meta_batch: a batch of the clean meta set.
            inner_lr: step size of the virtual SGD step (the model's current learning rate).
            forward: what computes the training batch's losses under the current parameters (default `module`;
                a DDP wrapper of it, so that the real backward through `MetaStep.losses` synchronises gradients).
            meta_loss_fn: per-sample losses of the meta batch (default `loss_fn`).
            keep_graph: keep the graph of `MetaStep.losses` for the caller's real backward.
        """
        from torch.func import functional_call

        names = list(params)
        tensors = [params[name] for name in names]
        losses = loss_fn(forward if forward is not None else module, batch)
        lookahead_weights = normalised(self.net(losses.detach()))
        grads = torch.autograd.grad((lookahead_weights * losses).sum(), tensors, create_graph=True, allow_unused=True)
        ahead = {name: p if g is None else p - inner_lr * g for name, p, g in zip(names, tensors, grads)}

        def ahead_forward(*args, **kwargs):
            return functional_call(module, ahead, args, kwargs, strict=False)

        meta_loss = (meta_loss_fn or loss_fn)(ahead_forward, meta_batch).mean()
        self.optimizer.zero_grad(set_to_none=True)
        meta_loss.backward(inputs=list(self.net.parameters()), retain_graph=keep_graph)
        _average_gradients(self.net)
        self.optimizer.step()
        with torch.no_grad():
            raw = self.net(losses.detach())
        return MetaStep(
            losses=losses if keep_graph else losses.detach(),
            weights=normalised(raw, total=raw.numel()),
            raw_weights=raw,
            meta_loss=float(meta_loss.detach()),
        )

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])


def _average_gradients(net: nn.Module) -> None:
    """Average the weight net's gradients over the processes of a `torch.distributed` job (no-op otherwise)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for p in net.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad /= world
