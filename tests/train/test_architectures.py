"""Qwen3-VL and LLaVA-OneVision through the real code paths: batched generation, the collator's loss mask,
LoRA on the language model only, a few training steps, and generation with the trained adapter."""

import pytest
import torch
from loop_helpers import training_config

from vstar.generate.base import GenerationRequest, GenerationSettings
from vstar.generate.hf import TransformersBackend
from vstar.train.collator import IGNORE_INDEX, VideoSFTCollator, video_model_inputs

ARCHITECTURES = ["qwen3_vl", "llava_onevision"]
# Where each architecture keeps its vision encoder (and projector); LoRA on `language` must not reach them.
VISION_MODULES = {"qwen3_vl": ("visual",), "llava_onevision": ("vision_tower", "multi_modal_projector")}
LANGUAGE_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def seed_dataset(shapes_dir, tmp_path_factory):
    """Eight instruction rows (four real clips, each asked directly and with a hint) written as a dataset."""
    from vstar.demo import seed_rows, write_seed_dataset
    from vstar.tasks.base import get_task

    rows = seed_rows(shapes_dir, 4, get_task("shapes"), seed=0)
    return write_seed_dataset(tmp_path_factory.mktemp("arch-seed"), rows), rows


def requests_for(shapes_dir, prompts: list[str]) -> list[GenerationRequest]:
    from datasets import load_dataset

    rows = load_dataset(str(shapes_dir), split="test").select(range(len(prompts)))
    return [
        GenerationRequest(r["id"], "direct", p, p, r["video"], r["start"], r["end"]) for r, p in zip(rows, prompts)
    ]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_batched_generation_matches_one_at_a_time(arch, tiny_model_dirs, shapes_dir):
    # 4 of the clip's 8 frames: the video processor must take them as sampled, not sample the window again.
    settings = GenerationSettings(batch_size=3, max_new_tokens=6, num_frames=4, decode_workers=0)
    backend = TransformersBackend(str(tiny_model_dirs[arch]), settings=settings)
    # Prompts of different lengths, so the batch is left-padded.
    requests = requests_for(shapes_dir, ["What moves?", "What colour is the moving shape, and where does it go?", "?"])
    prepared = backend.prepare(requests)
    if arch == "qwen3_vl":
        assert prepared["video_grid_thw"].tolist() == [[2, 4, 4]] * 3  # 4 frames in temporal pairs
    else:
        assert prepared["pixel_values_videos"].shape[1] == 4
    lengths = prepared["attention_mask"].sum(dim=1)
    assert len(set(lengths.tolist())) == 3 and (prepared["attention_mask"][:, -1] == 1).all()
    batched = backend.generate(requests)
    assert len(batched) == 3 and all(isinstance(answer, str) for answer in batched)
    assert batched == [backend.generate([request])[0] for request in requests]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_loss_covers_only_the_answer_after_the_inference_prompt(arch, tiny_model_dirs, seed_dataset):
    from transformers import AutoProcessor

    _, rows = seed_dataset
    processor = AutoProcessor.from_pretrained(tiny_model_dirs[arch])
    collator = VideoSFTCollator(processor, num_frames=8)
    batch = collator(rows[:4])
    tokenizer = processor.tokenizer
    video_token = tokenizer.convert_tokens_to_ids(processor.video_token)
    for i, row in enumerate(rows[:4]):
        supervised = batch["labels"][i] != IGNORE_INDEX
        # The answer and the end-of-turn token, nothing of the prompt.
        assert tokenizer.decode(batch["input_ids"][i][supervised]).rstrip("\n") == row["answer"] + "<|im_end|>"
        # What precedes the answer is exactly the prompt the generation backend sends (for LLaVA-OneVision the
        # template renders a finished assistant turn differently, `assistant \n`).
        prompt = processor.apply_chat_template(row["messages"][:1], tokenize=False, add_generation_prompt=True)
        context = batch["input_ids"][i][batch["attention_mask"][i].bool() & ~supervised]
        expected = video_model_inputs(processor, [prompt], [collator.clips.get(row)])["input_ids"][0]
        assert context.tolist() == expected.tolist()
    assert (batch["labels"][batch["input_ids"] == video_token] == IGNORE_INDEX).all()
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_lora_training_adapts_only_the_language_model(arch, tiny_model_dirs, shapes_dir, seed_dataset, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from vstar.train.sft import train

    dataset_dir, _ = seed_dataset
    base_dir = tiny_model_dirs[arch]
    config = training_config(
        model_name_or_path=str(base_dir),
        output_dir=str(tmp_path / "adapter"),
        dataset=str(dataset_dir),
        lora_target="language",
        per_device_train_batch_size=4,
        max_steps=3,
        # As in the recipes: checkpointing must keep gradients flowing into the adapter.
        activation_checkpointing=True,
    )
    summary = train(config)
    assert summary["global_step"] == 3 and summary["num_rows"] == 8
    assert summary["train_loss"] > 0

    base = AutoModelForImageTextToText.from_pretrained(base_dir)
    adapted = PeftModel.from_pretrained(base, tmp_path / "adapter")
    adapted_modules = {name.rsplit(".lora_A", 1)[0] for name, _ in adapted.named_parameters() if ".lora_A" in name}
    num_layers = base.config.text_config.num_hidden_layers
    assert len(adapted_modules) == num_layers * len(LANGUAGE_LINEAR)
    for name in adapted_modules:
        assert ".language_model.layers." in name and name.endswith(LANGUAGE_LINEAR), name
        assert not any(f".{part}." in name for part in VISION_MODULES[arch]), name
    # LoRA B starts at zero: training moved every adapted layer.
    lora_b = {name: p for name, p in adapted.named_parameters() if "lora_B" in name}
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b.values())

    # The adapter goes back into generation, merged into the base weights, and changes what the model says.
    settings = GenerationSettings(max_new_tokens=6, num_frames=8, decode_workers=0)
    requests = requests_for(shapes_dir, ["What moves?"])
    tuned = TransformersBackend(str(base_dir), adapter=str(tmp_path / "adapter"), settings=settings)
    plain = TransformersBackend(str(base_dir), settings=settings)
    with torch.no_grad():
        prepared = plain.prepare(requests)
        assert not torch.allclose(tuned.model(**prepared).logits, plain.model(**prepared).logits)
    assert len(tuned.generate(requests)) == 1
