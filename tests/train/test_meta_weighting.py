"""Meta-weighting (Meta-Weight-Net): the reusable look-ahead step, and `sample_weighting: meta` on the SFT path."""

import pytest
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


@pytest.mark.slow
def test_sft_meta_weighting_down_weights_garbled_answers_and_trains_the_adapter(warm_models, shapes_dir, tmp_path):
    """`sample_weighting: meta` on the real path (TRL trainer, PEFT LoRA, video collator): half the rows carry a
    garbled answer, which the warm model (it knows the answer template) finds far less likely than a clean one; the
    weight net, meta-trained on the clean seed set, learns to give those rows less weight."""
    import pandas as pd
    from loop_helpers import SEED_CLIPS, training_config
    from safetensors.torch import load_file

    from vstar.demo import seed_rows, write_seed_dataset
    from vstar.schema import conversation
    from vstar.tasks.base import get_task
    from vstar.train.sft import SAMPLE_WEIGHTS_FILE, train

    rows = seed_rows(shapes_dir, SEED_CLIPS + 8, get_task("shapes"), seed=0)[2 * SEED_CLIPS :]
    clip_ids = sorted({row["id"] for row in rows})
    garbled = set(clip_ids[::2])
    for row in rows:
        if row["id"] in garbled:
            row["answer"] = row["answer"][::-1]
            row["messages"] = conversation(row["messages"][0]["content"][-1]["text"], row["answer"])
    dataset = write_seed_dataset(tmp_path / "noisy", rows)
    output = tmp_path / "model"
    config = training_config(
        model_name_or_path=str(warm_models["qwen2_5_vl"]),
        output_dir=str(output),
        dataset=str(dataset),
        sample_weighting="meta",
        meta_dataset=str(warm_models["seed"]),
        meta_learning_rate=1e-2,
        max_steps=10,
        warmup_steps=0,
    )
    summary = train(config)
    assert summary["global_step"] == 10

    weights = pd.read_parquet(output / SAMPLE_WEIGHTS_FILE)
    assert len(weights) == 10 * config.per_device_train_batch_size
    assert set(weights["id"]) == set(clip_ids)
    assert weights.groupby("step")["weight"].mean().round(5).eq(1.0).all()  # normalised per batch
    late = weights[weights["step"] >= 5]
    bad = late["id"].isin(garbled)
    assert late.loc[bad, "loss"].mean() > late.loc[~bad, "loss"].mean()
    assert late.loc[bad, "weight"].mean() < late.loc[~bad, "weight"].mean() - 0.1, late.groupby(bad)["weight"].mean()
    adapter = load_file(str(output / "adapter_model.safetensors"))
    assert any(tensor.abs().max() > 0 for name, tensor in adapter.items() if "lora_B" in name)


def test_the_loop_meta_trains_on_its_seed_set(tiny_model_dirs, shapes_dir, tmp_path):
    from loop_helpers import small_cycle_config, training_config

    from vstar.cycle import CycleRunner
    from vstar.errors import ConfigError

    def runner(control):
        train_config = training_config(
            model_name_or_path=str(tiny_model_dirs["qwen2_5_vl"]), output_dir="unused", sample_weighting="meta"
        )
        config = small_cycle_config(tmp_path / f"run-{control is not None}", shapes_dir, control_dataset=control)
        return CycleRunner(config, train_config)

    assert runner(str(tmp_path / "seed")).train_config.meta_dataset == str(tmp_path / "seed")
    with pytest.raises(ConfigError, match="meta_dataset"):
        runner(None)
