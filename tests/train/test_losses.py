"""Token-weighted SFT losses (`loss_type: ce | tailr | adaptive_tailr`) on the real TRL training path."""

import copy
import json
import os
import subprocess
import sys

import pytest
import torch
from loop_helpers import training_config

from vstar.errors import ConfigError
from vstar.train.losses import TokenLoss, adaptive_gamma, shifted_log_probs, tailr_weights
from vstar.train.sft import VStarSFTConfig, build_trainer, training_identity

ARCH = "qwen2_5_vl"


@pytest.fixture(scope="module")
def four_rows(shapes_dir, tmp_path_factory):
    """Four instruction rows (two clips, each asked directly and with the hint)."""
    from vstar.demo import seed_rows, write_seed_dataset
    from vstar.tasks.base import get_task

    return write_seed_dataset(tmp_path_factory.mktemp("loss-data"), seed_rows(shapes_dir, 2, get_task("shapes"), 0))


def _config(model_dir, dataset, output_dir, **overrides) -> VStarSFTConfig:
    values = {
        "model_name_or_path": str(model_dir),
        "dataset": str(dataset),
        "output_dir": str(output_dir),
        "per_device_train_batch_size": 4,
        "max_steps": 1,
        "logging_steps": 1,
        "warmup_steps": 0,
    }
    values.update(overrides)
    return training_config(**values)


def _batch_loss(trainer, num_items_in_batch=None) -> torch.Tensor:
    """The trainer's training loss of its whole (four-row) dataset as one batch."""
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(4)]))
    trainer.model.train()
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, batch, num_items_in_batch=num_items_in_batch)


def test_tailr_weights_follow_the_formula_clamped_and_without_gradient():
    p = torch.tensor([1e-8, 0.01, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64)
    log_p = p.log().requires_grad_()
    weights = tailr_weights(log_p, gamma=0.1, min_weight=0.3)
    assert not weights.requires_grad
    torch.testing.assert_close(weights, (p / (0.1 + 0.9 * p)).clamp(0.3, 1.0))
    assert weights[0] == 0.3 and weights[-1] == 1.0
    assert torch.equal(tailr_weights(log_p, gamma=0.0, min_weight=0.0), torch.ones_like(p))
    # The gradient of the weighted NLL is the weighted gradient of the NLL: nothing flows through w.
    mask = torch.ones_like(p, dtype=torch.bool)
    TokenLoss(gamma=0.1, min_weight=0.3).token_losses(log_p, mask).sum().backward()
    torch.testing.assert_close(log_p.grad, -weights)


def test_label_smoothing_is_torch_label_smoothed_cross_entropy_at_gamma_zero():
    torch.manual_seed(0)
    logits = torch.randn(2, 7, 11)
    labels = torch.randint(0, 11, (2, 7))
    labels[0, :3] = -100
    log_probs, mask, smooth, _, _ = shifted_log_probs(logits, labels, with_smooth=True)
    ours = TokenLoss(label_smoothing=0.1).token_losses(log_probs, mask, smooth).sum() / mask.sum()
    expected = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), label_smoothing=0.1, ignore_index=-100
    )
    torch.testing.assert_close(ours, expected)


def test_adaptive_gamma_is_the_noise_estimate_clipped():
    assert adaptive_gamma(0.4, 0.05, 0.8) == 0.4
    assert adaptive_gamma(0.0, 0.05, 0.8) == 0.05
    assert adaptive_gamma(0.95, 0.05, 0.8) == 0.8
    config = VStarSFTConfig(output_dir="unused", loss_type="adaptive_tailr", tailr_noise_estimate=0.61)
    assert config.token_loss().gamma == pytest.approx(0.61)
    assert VStarSFTConfig(output_dir="unused", loss_type="adaptive_tailr").token_loss().gamma == 0.1
    # Plain cross-entropy is TRL's own loss, and its runs keep the identity they always had.
    plain = VStarSFTConfig(output_dir="unused", loss_type="nll")
    assert plain.loss_type == "ce" and plain.token_loss() is None
    assert "token_loss" not in training_identity(plain)
    with pytest.raises(ConfigError, match="loss_type must be"):
        VStarSFTConfig(output_dir="unused", loss_type="tailor")
    with pytest.raises(ConfigError, match="tailr_gamma"):
        VStarSFTConfig(output_dir="unused", loss_type="tailr", tailr_gamma=1.5)


def test_gamma_zero_equals_the_trainers_own_cross_entropy(tiny_model_dirs, four_rows, tmp_path):
    model = tiny_model_dirs[ARCH]
    ce = build_trainer(_config(model, four_rows, tmp_path / "ce"))
    tailr0 = build_trainer(_config(model, four_rows, tmp_path / "t0", loss_type="tailr", tailr_gamma=0.0))
    tailr = build_trainer(_config(model, four_rows, tmp_path / "t", loss_type="tailr", tailr_gamma=0.1))
    assert ce.token_loss is None and tailr0.token_loss is not None  # TRL's loss against vstar's
    reference = _batch_loss(ce)
    torch.testing.assert_close(_batch_loss(tailr0), reference, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(_batch_loss(tailr0, 1000), _batch_loss(ce, 1000), rtol=1e-6, atol=1e-7)
    # The full-logits path (label smoothing, meta-weighting) gives the same cross-entropy, as does the model.
    batch = ce._prepare_inputs(ce.data_collator([ce.train_dataset[i] for i in range(4)]))
    with torch.no_grad():
        terms = tailr0._token_terms(tailr0.model, batch, TokenLoss(), fused=False)
        model_loss = tailr0.model(**batch).loss
    torch.testing.assert_close(terms[0].sum() / terms[1].sum(), reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model_loss, reference, rtol=1e-5, atol=1e-6)
    # TaiLr only takes weight away from tokens: the random model's unlikely tokens all sit at the floor.
    assert 0.3 * reference - 1e-5 <= _batch_loss(tailr) < reference


def _first_log(trainer) -> dict:
    trainer.train()
    return next(entry for entry in trainer.state.log_history if "loss" in entry)


def test_gradient_accumulation_gives_the_loss_and_gradient_of_the_whole_batch(tiny_model_dirs, four_rows, tmp_path):
    model = tiny_model_dirs[ARCH]
    whole = _first_log(build_trainer(_config(model, four_rows, tmp_path / "b4", loss_type="tailr")))
    accumulated = _first_log(
        build_trainer(
            _config(
                model,
                four_rows,
                tmp_path / "b2x2",
                loss_type="tailr",
                per_device_train_batch_size=2,
                gradient_accumulation_steps=2,
            )
        )
    )
    assert accumulated["loss"] == pytest.approx(whole["loss"], rel=1e-4)
    assert accumulated["grad_norm"] == pytest.approx(whole["grad_norm"], rel=1e-4)


@pytest.mark.parametrize(
    ("finetuning", "overrides"),
    [("lora", {"loss_type": "tailr"}), ("full", {"loss_type": "adaptive_tailr", "label_smoothing": 0.1})],
)
def test_lora_and_full_finetuning_train_with_tailr(tiny_model_dirs, four_rows, tmp_path, finetuning, overrides):
    config = _config(tiny_model_dirs[ARCH], four_rows, tmp_path / finetuning, max_steps=3, **overrides)
    config.finetuning = finetuning
    trainer = build_trainer(config)
    params = {name: p for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert any("lora_" in name for name in params) == (finetuning == "lora")
    before = {name: p.detach().clone() for name, p in params.items()}
    trainer.train()
    moved = [name for name, p in params.items() if not torch.equal(before[name], p.detach())]
    assert len(moved) > len(params) // 2
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in trainer.state.log_history if "loss" in e)


DDP_SCRIPT = """
import json, sys
import torch
torch.set_num_threads(1)
from vstar.train.sft import VStarSFTConfig, build_trainer
trainer = build_trainer(VStarSFTConfig(**json.loads(sys.argv[1])))
trainer.train()
if trainer.is_world_process_zero():
    log = next(entry for entry in trainer.state.log_history if "loss" in entry)
    json.dump({"log": log, "world": trainer.accelerator.num_processes}, open(sys.argv[2], "w"))
"""


@pytest.mark.slow
def test_tailr_loss_is_the_same_with_one_and_two_processes(tiny_model_dirs, four_rows, tmp_path):
    model = tiny_model_dirs[ARCH]
    single = _first_log(build_trainer(_config(model, four_rows, tmp_path / "one", loss_type="tailr")))
    script = tmp_path / "ddp_step.py"
    script.write_text(DDP_SCRIPT)
    config = _config(model, four_rows, tmp_path / "two", loss_type="tailr", per_device_train_batch_size=2)
    settings = {key: getattr(config, key) for key in _config_keys()}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(script), json.dumps(settings), str(tmp_path / "ddp.json"),
    ]  # fmt: skip
    result = subprocess.run(
        command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    launched = json.loads((tmp_path / "ddp.json").read_text())
    assert launched["world"] == 2
    assert launched["log"]["loss"] == pytest.approx(single["loss"], rel=1e-4)
    assert launched["log"]["grad_norm"] == pytest.approx(single["grad_norm"], rel=1e-4)


def _config_keys() -> set[str]:
    """The settings a test sets explicitly (the rest keep their defaults in the launched processes)."""
    return {
        "model_name_or_path",
        "dataset",
        "output_dir",
        "per_device_train_batch_size",
        "max_steps",
        "logging_steps",
        "warmup_steps",
        "loss_type",
        "finetuning",
        "lora_target",
        "lora_r",
        "lora_alpha",
        "lora_dropout",
        "learning_rate",
        "num_train_epochs",
        "activation_checkpointing",
        "save_strategy",
        "report_to",
        "disable_tqdm",
        "num_frames",
        "seed",
    }


def test_the_loop_sets_adaptive_gamma_from_the_cycles_direct_yield(tiny_model_dirs, shapes_dir, tmp_path):
    from loop_helpers import small_cycle_config

    from vstar.cycle import CycleRunner
    from vstar.train.losses import cycle_noise_estimate

    assert cycle_noise_estimate({"direct_yield": 0.25}) == 0.75
    assert cycle_noise_estimate({"direct_yield": None}) is None and cycle_noise_estimate(None) is None
    train_config = training_config(
        model_name_or_path=str(tiny_model_dirs[ARCH]), output_dir=str(tmp_path / "t"), loss_type="adaptive_tailr"
    )
    runner = CycleRunner(small_cycle_config(tmp_path / "run", shapes_dir), train_config)
    # What `_train` gives the trainer for a cycle whose direct answers passed a quarter of the time.
    config = copy.deepcopy(runner.train_config)
    config.tailr_noise_estimate = cycle_noise_estimate({"direct_yield": 0.25})
    assert config.token_loss().gamma == pytest.approx(0.75)
    assert training_identity(config)["token_loss"]["gamma"] == pytest.approx(0.75)
    config.tailr_noise_estimate = cycle_noise_estimate({"direct_yield": 0.99})
    assert config.token_loss().gamma == pytest.approx(config.adaptive_gamma_min)
