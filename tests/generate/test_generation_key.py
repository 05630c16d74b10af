"""Saved answers belong to the model, adapter and settings that made them: another one starts the pass afresh."""

import json
import logging

import pytest

from vstar.evaluate.run import evaluate_model
from vstar.generate.base import GenerationSettings, get_backend, read_generations, run_generation
from vstar.io import load_split, rows_with_class_names
from vstar.tasks.base import get_task

SETTINGS = dict(batch_size=8, max_new_tokens=8, decode_workers=0)


def random_adapter(model_dir, output, seed: int):
    """A LoRA adapter with random (not zero) weights, so it changes the model's answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    from vstar.train.sft import LANGUAGE_LINEAR

    torch.manual_seed(seed)
    base = AutoModelForImageTextToText.from_pretrained(model_dir)
    config = LoraConfig(r=8, lora_alpha=64, target_modules=LANGUAGE_LINEAR, init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(output)
    return output


@pytest.fixture(scope="module")
def eval_rows(shapes_dir):
    return rows_with_class_names(load_split(str(shapes_dir), "test").select(range(8)))


def answers(output_dir):
    return {r["id"]: r["answer"] for r in read_generations(output_dir, "eval")}


def test_another_adapter_into_the_same_output_gives_its_own_answers(tiny_model_dirs, eval_rows, tmp_path, caplog):
    model = str(tiny_model_dirs["qwen2_5_vl"])
    adapter = random_adapter(model, tmp_path / "adapter", seed=1)
    task, settings = get_task("shapes"), GenerationSettings(**SETTINGS)
    shared = tmp_path / "eval"

    base = evaluate_model(get_backend(settings, model), eval_rows, task, shared, settings)
    base_answers = answers(shared)
    with caplog.at_level(logging.WARNING, logger="vstar.generate.base"):
        tuned = evaluate_model(get_backend(settings, model, str(adapter)), eval_rows, task, shared, settings)
    assert "adapter" in caplog.text and "adapter_revision" in caplog.text and "replaced" in caplog.text
    fresh = tmp_path / "fresh"
    evaluate_model(get_backend(settings, model, str(adapter)), eval_rows, task, fresh, settings)
    assert answers(shared) == answers(fresh) != base_answers
    assert [p["answer"] for p in tuned["predictions"]] == [answers(fresh)[r["id"]] for r in eval_rows]
    assert [p["answer"] for p in base["predictions"]] != [p["answer"] for p in tuned["predictions"]]
    # The base model's answers were set aside whole, not deleted.
    (aside,) = (shared / "replaced").iterdir()
    assert answers(aside) == base_answers
    key = json.loads((shared / "eval-generation_key.json").read_text())
    assert key["adapter"] == str(adapter) and key["adapter_revision"].startswith("sha256:")


def test_a_changed_adapter_at_the_same_path_or_a_changed_setting_is_not_reused(tiny_model_dirs, eval_rows, tmp_path):
    model = str(tiny_model_dirs["qwen2_5_vl"])
    adapter = random_adapter(model, tmp_path / "adapter", seed=1)
    task = get_task("shapes")
    settings = GenerationSettings(**SETTINGS)
    from vstar.evaluate.run import eval_requests

    requests = eval_requests(eval_rows, task, settings.seed)
    out = tmp_path / "gen"
    assert run_generation(requests, get_backend(settings, model, str(adapter)), out, "eval", settings, 0, 1) == 8
    first = answers(out)
    # Same model, adapter and settings: resumed, nothing answered again.
    assert run_generation(requests, get_backend(settings, model, str(adapter)), out, "eval", settings, 0, 1) == 0

    random_adapter(model, adapter, seed=2)  # retrained in place: same path, other weights
    assert run_generation(requests, get_backend(settings, model, str(adapter)), out, "eval", settings, 0, 1) == 8
    assert answers(out) != first

    longer = GenerationSettings(**{**SETTINGS, "max_new_tokens": 12})
    assert run_generation(requests, get_backend(longer, model, str(adapter)), out, "eval", longer, 0, 1) == 8
    other_questions = eval_requests(eval_rows, task, seed=5)
    assert run_generation(other_questions, get_backend(longer, model, str(adapter)), out, "eval", longer, 0, 1) == 8
    assert len(list((out / "replaced").iterdir())) == 3
    # Another process of a split run does not replace rank 0's answers on its own.
    with pytest.raises(ValueError, match="run rank 0 first"):
        run_generation(requests, get_backend(settings, model), out, "eval", settings, rank=1, world_size=2)
