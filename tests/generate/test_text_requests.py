"""Text-only requests (no video), system prompts and per-request answer limits, on the real tiny Qwen2.5-VL."""

import pytest
import torch

from vstar.generate.base import (
    GenerationRequest,
    GenerationSettings,
    generation_key,
    read_generations,
    request_prompt,
    requests_digest,
    run_generation,
)
from vstar.generate.hf import TransformersBackend
from vstar.io import load_split

SETTINGS = dict(batch_size=4, chunk_size=3, max_new_tokens=6, num_frames=4, decode_workers=0)


@pytest.fixture(scope="module")
def backend(tiny_model_dirs):
    return TransformersBackend(str(tiny_model_dirs["qwen2_5_vl"]), settings=GenerationSettings(**SETTINGS))


@pytest.fixture(scope="module")
def rows(shapes_dir):
    return list(load_split(str(shapes_dir), "test").select(range(3)))


def mixed_requests(rows) -> list[GenerationRequest]:
    """Video requests and text-only ones of different lengths, interleaved."""
    requests = []
    for i, row in enumerate(rows):
        requests.append(GenerationRequest(row["id"], "clip", "What moves?", "What moves?", row["video"], 0.0, 0.5))
        summary = "Summarise: a red square moves left, then a blue circle grows." + " Then it stops." * i
        requests.append(GenerationRequest(row["id"], "summary", "", summary))
    return requests


def test_text_only_prompts_have_no_video_placeholder(backend, rows):
    processor = backend.processor
    text = GenerationRequest("a", "summary", "", "Summarise the clip.")
    assert text.video is None and text.text_only
    assert (
        request_prompt(processor, text) == "<|im_start|>user\nSummarise the clip.<|im_end|>\n<|im_start|>assistant\n"
    )
    with_system = GenerationRequest("a", "summary", "", "Summarise the clip.", system="Answer in one sentence.")
    assert request_prompt(processor, with_system).startswith(
        "<|im_start|>system\nAnswer in one sentence.<|im_end|>\n<|im_start|>user\nSummarise"
    )
    video = GenerationRequest(rows[0]["id"], "clip", "Q", "What moves?", rows[0]["video"])
    assert "<|video_pad|>" in request_prompt(processor, video)

    prepared = backend.prepare([text, with_system])  # nothing decoded, no video inputs
    assert "pixel_values_videos" not in prepared and prepared["input_ids"].shape[0] == 2
    assert (prepared["attention_mask"][:, -1] == 1).all()  # left padded


def test_mixed_batch_matches_one_at_a_time(backend, rows):
    requests = mixed_requests(rows)
    prepared = backend.prepare(requests)
    video_token = backend.processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    has_video = (prepared["input_ids"] == video_token).any(dim=1).tolist()
    assert has_video == [not r.text_only for r in requests]
    assert prepared["video_grid_thw"].shape[0] == 3  # one clip per video request, none for the summaries
    lengths = prepared["attention_mask"].sum(dim=1)
    assert len(set(lengths.tolist())) > 2 and (prepared["attention_mask"][:, -1] == 1).all()
    batched = backend.generate(requests)
    assert len(batched) == 6 and all(isinstance(a, str) and a for a in batched)
    assert batched == [backend.generate([r])[0] for r in requests]
    # The system prompt reaches the model: the inputs differ, and so do the next-token scores.
    plain = requests[1]
    briefed = GenerationRequest(plain.id, plain.attempt, "", plain.prompt, system="You are terse.")
    with torch.no_grad():
        logits = [backend.model(**backend.prepare([r])).logits[0, -1] for r in (plain, briefed)]
    assert not torch.allclose(*logits)


def with_limit(backend, limit: int, requests) -> list[str]:
    """The answers of `requests` with `max_new_tokens` set for the whole pass instead."""
    saved = backend.settings
    backend.settings = GenerationSettings(**{**SETTINGS, "max_new_tokens": limit})
    try:
        return [backend.generate([r])[0] for r in requests]
    finally:
        backend.settings = saved


def test_per_request_answer_limits(backend, rows):
    requests = mixed_requests(rows)[:4]
    limits = (2, 5, None, 1)
    for request, limit in zip(requests, limits):
        request.max_new_tokens = limit
    batched = backend.generate(requests)
    assert batched == [backend.generate([r])[0] for r in requests]
    plain = [GenerationRequest(r.id, r.attempt, r.question, r.prompt, r.video, r.start, r.end) for r in requests]
    for i, limit in enumerate(limits):
        assert [batched[i]] == with_limit(backend, limit or SETTINGS["max_new_tokens"], plain[i : i + 1])
    assert batched != backend.generate(plain)
    # A limit shared by the whole batch is applied too, not only mixed ones.
    short = [GenerationRequest(r.id, r.attempt, r.question, r.prompt, r.video, max_new_tokens=1) for r in requests]
    assert backend.generate(short) == with_limit(backend, 1, plain)


def test_run_generation_with_text_only_requests_resumes(backend, rows, tmp_path):
    settings = GenerationSettings(**SETTINGS)
    requests = mixed_requests(rows)
    expected = dict(zip([(r.id, r.attempt) for r in requests], backend.generate(requests)))
    out = tmp_path / "gen"
    assert run_generation(requests, backend, out, "mixed", settings, 0, 1) == 6
    saved = read_generations(out, "mixed")
    assert [(r["id"], r["attempt"]) for r in saved] == sorted(expected)
    assert {(r["id"], r["attempt"]): r["answer"] for r in saved} == expected
    assert run_generation(requests, backend, out, "mixed", settings, 0, 1) == 0
    # A run that stopped after its first chunk: only the second chunk's three requests are asked again.
    last = sorted(out.glob("mixed-rank000-*.parquet"))[-1]
    last.unlink()
    assert run_generation(requests, backend, out, "mixed", settings, 0, 1) == 3
    assert {(r["id"], r["attempt"]): r["answer"] for r in read_generations(out, "mixed")} == expected

    # Sharded: each of two ranks answers one chunk (rank 1 plans first, as if the two ran at once); same answers.
    split = tmp_path / "split"
    assert run_generation(requests, backend, split, "mixed", settings, 1, 2) == 3
    assert run_generation(requests, backend, split, "mixed", settings, 0, 2) == 3
    assert {(r["id"], r["attempt"]): r["answer"] for r in read_generations(split, "mixed")} == expected


def test_generation_key_covers_text_requests_system_and_limits(backend, rows):
    settings = GenerationSettings(**SETTINGS)
    requests = mixed_requests(rows)
    digest = requests_digest(requests)
    assert requests_digest(list(reversed(requests))) == digest
    text = requests[1]
    variants = [
        GenerationRequest(text.id, text.attempt, "", text.prompt, system="Be brief."),
        GenerationRequest(text.id, text.attempt, "", text.prompt, max_new_tokens=3),
        GenerationRequest(text.id, text.attempt, "", text.prompt, rows[0]["video"]),  # with a video: another ask
    ]
    for variant in variants:
        assert requests_digest([*requests[:1], variant, *requests[2:]]) != digest
    key = generation_key(backend, settings, requests)
    assert key["requests"] == digest and key["num_requests"] == 6
