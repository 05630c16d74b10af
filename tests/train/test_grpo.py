"""vstar grpo: the video reaches every log-probability forward, training moves the adapter, hints, resume, DDP."""

import json
import os
import subprocess
import sys

import pytest
import torch

from vstar.generate.base import chat_prompt
from vstar.train.collator import video_model_inputs
from vstar.train.grpo import VStarGRPOConfig, build_grpo_trainer, main, train_grpo
from vstar.train.rewards import REWARDS, completion_text
from vstar.video import sample_frames


@REWARDS.register("test_length")
def length_spread(task, config):
    """A reward that differs between rollouts of one prompt (an untrained model never passes the verifier)."""

    def test_length(completions, **columns):
        return [len(completion_text(c)) / 50 for c in completions]

    return test_length


def grpo_config(model_dir, shapes_dir, output_dir, **overrides):
    values = {
        "output_dir": str(output_dir),
        "model_name_or_path": str(model_dir),
        "dataset": str(shapes_dir),
        "task": "shapes",
        "dataset_limit": 2,
        "num_generations": 2,
        "per_device_train_batch_size": 4,
        "max_completion_length": 6,
        "temperature": 1.0,
        "learning_rate": 1e-2,
        "lora_target": "all",
        "lora_r": 4,
        "lora_alpha": 8,
        "num_frames": 4,
        "max_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "logging_steps": 1,
        "seed": 0,
    }
    values.update(overrides)
    return VStarGRPOConfig(**values)


def group_inputs(trainer, group: int) -> list[dict]:
    """A generation batch as TRL's sampler gives it: each prompt `group` times in a row."""
    return [trainer.train_dataset[i] for i in range(len(trainer.train_dataset)) for _ in range(group)]


def reference_logps(model, processor, row, completion: list[int], temperature: float) -> torch.Tensor:
    """Log-probabilities of a completion from a plain forward on the row's clip, decoded and processed afresh."""
    clip = sample_frames(row["video"], num_frames=4, start=row["start"], end=row["end"])
    inputs = video_model_inputs(processor, [chat_prompt(processor, row["prompt_text"])], [clip])
    ids = torch.cat([inputs["input_ids"], torch.tensor([completion])], 1)
    extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    if "mm_token_type_ids" in extra:
        mm = extra["mm_token_type_ids"]
        extra["mm_token_type_ids"] = torch.cat([mm, mm.new_zeros((1, len(completion)))], 1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), **extra).logits.float()
    logps = torch.log_softmax(logits[0, -len(completion) - 1 : -1] / temperature, -1)
    return logps.gather(-1, torch.tensor(completion).unsqueeze(-1)).squeeze(-1)


def perturb_adapter(model) -> None:
    # A new adapter equals the base model (LoRA B starts at 0): move it so policy and reference differ.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B.default" in name:  # not TRL's frozen `ref` copy of the starting adapter
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.5)


def test_logps_are_those_of_the_model_on_the_video(tiny_model_dirs, shapes_dir, tmp_path):
    """Policy (loss), old-policy and reference log-probabilities equal a plain forward on the same video and
    text, and change when the video changes: a trainer that scored prompts without their video would fail."""
    config = grpo_config(tiny_model_dirs["qwen2_5_vl"], shapes_dir, tmp_path, beta=0.1, num_iterations=2)
    trainer = build_grpo_trainer(config)
    perturb_adapter(trainer.model)
    trainer.model.train()
    inputs = group_inputs(trainer, config.num_generations)
    batch = trainer._generate_and_score_completions(inputs)
    assert {"old_per_token_logps", "ref_per_token_logps", "pixel_values_videos"} <= set(batch)

    # The loss's own forward, observed as it runs.
    seen = []
    method = trainer._get_per_token_logps_and_entropies

    def observed(*args, **kwargs):
        result = method(*args, **kwargs)
        seen.append(result[0].detach())
        return result

    trainer._get_per_token_logps_and_entropies = observed
    trainer.model.eval()  # no dropout, as in the reference forward
    trainer._compute_loss(trainer.model, batch)
    (policy,) = seen

    model = trainer.accelerator.unwrap_model(trainer.model)
    processor = trainer.processing_class
    for i, row in enumerate(inputs):
        mask = batch["completion_mask"][i].bool()
        completion = batch["completion_ids"][i][mask].tolist()
        expected = reference_logps(model, processor, row, completion, config.temperature)
        torch.testing.assert_close(policy[i][mask], expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(batch["old_per_token_logps"][i][mask], expected, atol=1e-4, rtol=1e-4)
        with model.disable_adapter():
            base = reference_logps(model, processor, row, completion, config.temperature)
        torch.testing.assert_close(batch["ref_per_token_logps"][i][mask], base, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(base, expected, atol=1e-3)  # the reference is not the policy

    # The same completions scored on the other prompt's video: different log-probabilities.
    swapped = dict(batch)
    videos = batch["pixel_values_videos"]
    swapped["pixel_values_videos"] = videos[2:] + videos[:2]
    seen.clear()
    trainer._compute_loss(trainer.model, swapped)
    mask = batch["completion_mask"].bool()
    assert (seen[0][mask] - policy[mask]).abs().max() > 1e-3


def test_one_step_moves_the_adapter_and_publishes_it(tiny_model_dirs, shapes_dir, tmp_path, hub_env):
    from safetensors.torch import load_file

    repo = "vstar-org/grpo-shapes"
    config = grpo_config(
        tiny_model_dirs["qwen2_5_vl"], shapes_dir, tmp_path / "out", rewards=["test_length", "format"], hub_repo=repo
    )
    summary = train_grpo(config)
    assert summary["global_step"] == 1
    weights = load_file(str(tmp_path / "out" / "adapter_model.safetensors"))
    moved = [name for name, value in weights.items() if "lora_B" in name and value.abs().sum() > 0]
    assert moved, "no LoRA B matrix left zero after one step"  # they start at exactly 0
    rewards = json.loads((tmp_path / "out" / "rewards.json").read_text())
    assert [r["name"] for r in rewards] == ["test_length", "format"]
    assert "final-answer line" in rewards[1]["definition"]
    logged = summary["log_history"][0]
    assert logged["rewards/test_length/mean"] > 0 and logged["frac_reward_zero_std"] < 1

    # Published like a cycle's adapter: a tagged version whose card lists the rewards and the lineage.
    assert summary["hub"]["tag"] == "grpo-step-1"
    tags = {t.name: t.target_commit for t in hub_env.api.list_repo_refs(repo).tags}
    assert tags["grpo-step-1"] == summary["hub"]["revision"]
    files = hub_env.api.list_repo_files(repo, revision="grpo-step-1")
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md", "rewards.json"} <= set(files)
    card = open(hub_env.api.hf_hub_download(repo, "README.md", revision="grpo-step-1")).read()
    assert "| test_length |" in card and "final-answer line" in card and "## Lineage" in card
    assert "library_name: peft" in card


def test_hint_regenerates_failed_groups_against_the_unhinted_prompt(tiny_model_dirs, shapes_dir, tmp_path):
    config = grpo_config(
        tiny_model_dirs["qwen2_5_vl"],
        shapes_dir,
        tmp_path,
        num_generations=4,
        per_device_train_batch_size=8,
        hint_when_all_fail=True,
        hint_generations=2,
        hint_min_weight=0.25,
    )
    trainer = build_grpo_trainer(config)
    trainer.model.train()
    inputs = group_inputs(trainer, 4)
    assert all(row["hint_text"] != row["prompt_text"] for row in inputs)
    assert "square" in inputs[0]["hint_text"] and json.loads(inputs[0]["label"])["label"] in inputs[0]["hint_text"]
    # Rollouts never contain a vision placeholder (it would be read as a video token by every later forward).
    assert trainer._video_pad_token_id in trainer.generation_config.suppress_tokens
    batch = trainer._generate_and_score_completions(inputs)
    assert not (batch["completion_ids"] == trainer._video_pad_token_id).any()
    metrics = trainer._metrics["train"]
    # An untrained model fails every group: the last 2 rollouts of each of the 2 groups are hinted.
    assert metrics["hint/groups_all_failed"] == [1.0]
    assert metrics["hint/rollouts"] == [4.0]
    weight = metrics["hint/importance_weight"][0]
    assert 0.25 <= weight <= 1.0
    # Hinted rollouts are trained against the unhinted prompt: every row of a group has the same prompt ids.
    prompts = batch["prompt_ids"].view(2, 4, -1)
    assert (prompts == prompts[:, :1]).all()
    assert torch.isfinite(batch["advantages"]).all()


def test_cli_resumes_after_a_kill(tiny_model_dirs, shapes_dir, tmp_path):
    """`vstar grpo` from a recipe with overrides; a rerun after a kill resumes from the last complete checkpoint."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "task: shapes\ndataset_limit: 2\nnum_generations: 2\nper_device_train_batch_size: 4\n"
        "max_completion_length: 4\nlora_target: all\nlora_r: 4\nnum_frames: 4\nreport_to: none\n"
        "disable_tqdm: true\nsave_strategy: steps\nsave_steps: 1\nrewards: [test_length]\nreward_weights: [2.0]\n"
    )
    out = tmp_path / "out"
    common = ["--config", str(recipe), "--model_name_or_path", str(tiny_model_dirs["qwen2_5_vl"])]
    common += ["--dataset", str(shapes_dir), "--output_dir", str(out)]
    main([*common, "--max_steps", "2"])
    assert json.loads((out / "train_summary.json").read_text())["global_step"] == 2
    assert json.loads((out / "rewards.json").read_text())[0]["weight"] == 2.0
    # A kill while the next checkpoint was written leaves it without its trainer state.
    (out / "checkpoint-3").mkdir()
    (out / "checkpoint-3" / "adapter_model.safetensors").write_bytes(b"partial")
    main([*common, "--max_steps", "3", "--resume_from_checkpoint", "last"])
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["resumed_from"] == "checkpoint-2" and summary["global_step"] == 3


@pytest.mark.slow
def test_two_processes_train_one_ddp_job(tiny_model_dirs, shapes_dir, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    out = tmp_path / "out"
    recipe.write_text(
        f"task: shapes\ndataset: {shapes_dir}\nmodel_name_or_path: {tiny_model_dirs['qwen2_5_vl']}\n"
        f"output_dir: {out}\ndataset_limit: 4\nnum_generations: 2\nper_device_train_batch_size: 2\n"
        "max_completion_length: 4\nlora_target: all\nlora_r: 4\nnum_frames: 4\nreport_to: none\nmax_steps: 2\n"
        "disable_tqdm: true\nsave_strategy: 'no'\nrewards: [accuracy, format]\nhint_when_all_fail: true\n"
        "hint_generations: 1\nlogging_steps: 1\n"
    )
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "vstar.cli", "grpo", "--config", str(recipe),
    ]  # fmt: skip
    result = subprocess.run(
        command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["global_step"] == 2
    assert (out / "adapter_model.safetensors").exists()


def test_bad_settings_fail_before_any_work(tmp_path):
    from vstar.errors import ConfigError

    with pytest.raises(ConfigError, match="reward_weights has 1 values for 2 rewards"):
        VStarGRPOConfig(output_dir=str(tmp_path), reward_weights=[1.0])
    with pytest.raises(ConfigError, match="hint_when_all_fail needs the `accuracy` reward"):
        VStarGRPOConfig(output_dir=str(tmp_path), rewards=["format"], hint_when_all_fail=True)
    with pytest.raises(ConfigError, match="hint_min_weight"):
        VStarGRPOConfig(output_dir=str(tmp_path), hint_min_weight=1.5)
    with pytest.raises(ConfigError, match="--dataset"):
        build_grpo_trainer(VStarGRPOConfig(output_dir=str(tmp_path), task="shapes"))
