"""Meta-weighting (Meta-Weight-Net): the reusable look-ahead step, and `sample_weighting: meta` on the SFT path."""

import torch

from vstar.train.weighting import MetaWeighting, MetaWeightNet


def _noisy_classification(seed: int = 0):
    """A linear task: 64 training samples of which every other label is flipped, and a clean meta set of 32."""
    generator = torch.Generator().manual_seed(seed)
    direction = torch.randn(8, generator=generator)

    def sample(n):
        x = torch.randn(n, 8, generator=generator)
        return x, (x @ direction > 0).long()

    x, y = sample(64)
    corrupted = torch.arange(64) % 2 == 0
    y = torch.where(corrupted, 1 - y, y)
    return (x, y), corrupted, sample(32)


def _cross_entropy(forward, batch):
    x, y = batch
    return torch.nn.functional.cross_entropy(forward(x), y, reduction="none")


def test_weight_net_maps_losses_to_weights_in_unit_interval():
    net = MetaWeightNet(hidden_size=64)
    weights = net(torch.tensor([0.0, 1.0, 5.0, 50.0]))
    assert weights.shape == (4,)
    assert ((weights > 0) & (weights < 1)).all()
    assert sum(p.numel() for p in net.parameters()) == 64 + 64 + 64 + 1


def test_look_ahead_learns_to_down_weight_corrupted_samples():
    torch.manual_seed(0)
    batch, corrupted, meta_batch = _noisy_classification()
    model = torch.nn.Linear(8, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(20):  # a model that knows the task a little, so corrupted labels cost more than clean ones
        optimizer.zero_grad()
        _cross_entropy(model, meta_batch).mean().backward()
        optimizer.step()
    weighting = MetaWeighting(hidden_size=64, learning_rate=1e-2, seed=0)
    params = dict(model.named_parameters())
    before = {name: p.detach().clone() for name, p in params.items()}
    first = None
    for _ in range(30):
        optimizer.zero_grad()
        step = weighting.step(model, params, _cross_entropy, batch, meta_batch, inner_lr=0.5)
        first = step if first is None else first
        assert all(p.grad is None for p in params.values())  # the look-ahead step leaves the model's gradients alone
        assert torch.allclose(step.weights.mean(), torch.tensor(1.0))
        (step.weights * step.losses).mean().backward()  # the graph of the losses was kept for the real step
        optimizer.step()
    gap_first = first.weights[~corrupted].mean() - first.weights[corrupted].mean()
    gap_last = step.weights[~corrupted].mean() - step.weights[corrupted].mean()
    assert gap_last > 0.3, gap_last
    assert gap_last > gap_first
    assert any(not torch.equal(before[name], p) for name, p in params.items())


def test_weight_net_initialisation_is_seeded_and_leaves_the_global_stream_alone():
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    a = MetaWeighting(seed=5)
    after = torch.rand(3)
    b = MetaWeighting(seed=5)
    assert torch.equal(expected, after)
    assert all(torch.equal(p, q) for p, q in zip(a.net.parameters(), b.net.parameters()))
