"""Tiny models load through the Auto classes, run a forward pass on real video frames and generate."""

import pytest
import torch

from vstar.testing.tiny_models import build_tokenizer
from vstar.video import sample_frames


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen2_vl"])
def test_tiny_model_loads_and_generates(tiny_model_dirs, shapes_dir, arch):
    from datasets import load_dataset
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dirs[arch])
    processor = AutoProcessor.from_pretrained(tiny_model_dirs[arch])
    assert model.config.model_type == arch
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    rows = load_dataset(str(shapes_dir), split="test").select(range(3))
    clips = [sample_frames(r["video"], num_frames=8) for r in rows]
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(
        text=[text] * 3,
        videos=[c.frames for c in clips],
        video_metadata=[c.video_metadata() for c in clips],
        padding=True,
        return_tensors="pt",
    )
    # 8 frames of 56 x 56: 4 temporal x 4 x 4 patches, merged 2 x 2 -> 16 video tokens per clip.
    assert inputs["video_grid_thw"].tolist() == [[4, 4, 4]] * 3
    assert (inputs["input_ids"] == model.config.video_token_id).sum().item() == 3 * 16
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[0] == 3 and out.shape[1] > inputs["input_ids"].shape[1]
    # The video reaches the language model: different clips give different logits.
    with torch.no_grad():
        logits = model(**inputs).logits[:, -1]
    assert not torch.allclose(logits[0], logits[1])


def test_same_seed_same_weights(tmp_path):
    from transformers import AutoModelForImageTextToText

    from vstar.testing.tiny_models import build_tiny_vlm

    corpus = ["a red square moving left"] * 3
    a = AutoModelForImageTextToText.from_pretrained(build_tiny_vlm(tmp_path / "a", corpus=corpus, seed=1))
    b = AutoModelForImageTextToText.from_pretrained(build_tiny_vlm(tmp_path / "b", corpus=corpus, seed=1))
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), name


def test_tokenizer_round_trips_any_text():
    tokenizer = build_tokenizer(["The square is red. It moves left."] * 3)
    for text in ["The square is red.", "Ünïcødé ✓ 3½ — naïve", "<|im_start|>user\nhi<|im_end|>"]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
    # The corpus's own words become single tokens; unseen text falls back to bytes.
    assert len(tokenizer(" square", add_special_tokens=False)["input_ids"]) == 1
    assert tokenizer.convert_tokens_to_ids("<|video_pad|>") != tokenizer.unk_token_id
