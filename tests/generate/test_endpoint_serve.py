"""The endpoint backend against a real OpenAI-compatible teacher: `transformers serve` serving the tiny Qwen2.5-VL
on the loopback (started once for the module), compared with the same model run here."""

import pytest
import torch

from vstar.generate import GenerationRequest, GenerationSettings, get_backend, read_generations, read_skipped
from vstar.generate.base import run_generation
from vstar.generate.hf import TransformersBackend
from vstar.io import load_split
from vstar.video import sample_frames

pytestmark = pytest.mark.slow  # the server takes ~20 s to start on two cores

MAX_NEW_TOKENS = 8


@pytest.fixture(scope="module")
def served(tiny_model_dirs, tmp_path_factory):
    from transformers.utils.import_utils import is_serve_available

    if not is_serve_available():
        pytest.skip("transformers serve needs the `serve` extra: pip install 'vstar[serve]'")
    from vstar.testing.serve import serve_model

    with serve_model(tiny_model_dirs["qwen2_5_vl"], log_dir=tmp_path_factory.mktemp("serve-log")) as server:
        yield server


@pytest.fixture(scope="module")
def local(tiny_model_dirs):
    settings = GenerationSettings(max_new_tokens=MAX_NEW_TOKENS, decode_workers=0)
    return TransformersBackend(str(tiny_model_dirs["qwen2_5_vl"]), settings=settings)


@pytest.fixture(scope="module")
def rows(shapes_dir):
    return list(load_split(str(shapes_dir), "test").select(range(3)))


def settings_for(server, **overrides) -> GenerationSettings:
    values = dict(
        backend="endpoint",
        endpoint_url=server.base_url,
        api_key_env="VSTAR_SERVE_TEST_KEY",
        num_frames=2,
        max_new_tokens=MAX_NEW_TOKENS,
        image_format="png",
        batch_size=4,
        chunk_size=2,
        max_concurrency=2,
        request_timeout=60.0,
        max_retries=1,
    )
    return GenerationSettings(**{**values, **overrides})


def answer_with_images(local: TransformersBackend, frames, prompt: str) -> str:
    """What the tiny model answers here, greedily, to the frames as images and the prompt."""
    processor = local.processor
    messages = [{"role": "user", "content": [*[{"type": "image"}] * len(frames), {"type": "text", "text": prompt}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=list(frames), return_tensors="pt")
    with torch.inference_mode():
        output = local.model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    return processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def without_special_tokens(local: TransformersBackend, text: str) -> str:
    """The served text as the local decode gives it (`skip_special_tokens=True`).

    `transformers serve` parses a Qwen answer with its response template on the decode that keeps special tokens,
    so the random tiny model's stray `<|vision_start|>` and the like stay in the served content.
    """
    for token in local.processor.tokenizer.all_special_tokens:
        text = text.replace(token, "")
    return text.strip()


def test_answers_with_images_and_text_only_match_the_model_and_resume(served, local, rows, tmp_path):
    settings = settings_for(served)
    requests = [
        GenerationRequest(r["id"], "clip", "Q", f"Describe clip {i}.", r["video"], 0.0, 0.75)
        for i, r in enumerate(rows)
    ]
    requests += [
        GenerationRequest("summary-0", "summary", "", "Summarise: a square turns red."),
        GenerationRequest("summary-1", "summary", "", "Summarise again.", system="Answer in one line."),
    ]
    backend = get_backend(settings, served.model)
    assert backend.generator == f"endpoint:{served.model}@{served.base_url}"
    assert run_generation(requests, backend, tmp_path, "teach", settings, 0, 1) == 5
    saved = read_generations(tmp_path, "teach")
    assert [(r["id"], r["attempt"]) for r in saved] == sorted((r.id, r.attempt) for r in requests)
    answers = {(r["id"], r["attempt"]): r["answer"] for r in saved}
    assert all(r["generator"] == backend.generator for r in saved)
    for request in requests[:3]:  # the served model saw exactly the sampled frames
        frames = sample_frames(request.video, num_frames=2, start=0.0, end=0.75).frames
        served_answer = without_special_tokens(local, answers[(request.id, request.attempt)])
        assert served_answer == answer_with_images(local, frames, request.prompt)
    # Text-only turns (with a system prompt) answer as the transformers backend answers them here.
    served_text = [without_special_tokens(local, answers[(r.id, r.attempt)]) for r in requests[3:]]
    assert served_text == local.generate(requests[3:])
    assert len(set(answers.values())) > 1

    # Killed after two of its three chunks: only the last chunk is asked again, with the same answers.
    sorted(tmp_path.glob("teach-rank000-*.parquet"))[-1].unlink()
    assert run_generation(requests, get_backend(settings, served.model), tmp_path, "teach", settings, 0, 1) == 1
    assert {(r["id"], r["attempt"]): r["answer"] for r in read_generations(tmp_path, "teach")} == answers
    assert run_generation(requests, get_backend(settings, served.model), tmp_path, "teach", settings, 0, 1) == 0


def test_the_server_refusing_a_request_is_reported_not_retried(served, rows, tmp_path):
    # The server is pinned to its model: asking for another is a 400, every time.
    settings = settings_for(served)
    requests = [
        GenerationRequest(rows[0]["id"], "clip", "Q", "Describe.", rows[0]["video"]),
        GenerationRequest("summary-0", "summary", "", "Summarise."),
    ]
    backend = get_backend(settings, "some-other-model")
    assert run_generation(requests, backend, tmp_path, "teach", settings, 0, 1) == 0
    skipped = read_skipped(tmp_path, "teach")
    assert [(s["id"], s["kind"], s["status"]) for s in skipped] == [
        (rows[0]["id"], "client_error", 400),
        ("summary-0", "client_error", 400),
    ]
    assert all("pinned" in s["error"] and "gave up" not in s["error"] for s in skipped)
    assert skipped[0]["video"] == rows[0]["video"]["path"]
