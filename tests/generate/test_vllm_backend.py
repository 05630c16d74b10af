"""The vLLM backend without vLLM: its pure parts on real clips, processors and PEFT adapters, the engine faked.

vLLM needs a CUDA GPU, so the engine (`vllm.LLM`) is replaced by a stand-in module in `sys.modules`
(`vstar.testing.fake_vllm`); everything
before it (frames, metadata, chat prompts, merged weights, engine and sampling arguments) and after it (answers
in request order, resumable chunk files) is the real code.
"""

import json
import sys
from pathlib import Path

import pytest
import torch

from vstar.generate import BACKENDS, GenerationRequest, GenerationSettings, get_backend, read_generations
from vstar.generate.base import run_generation
from vstar.generate.vllm import (
    MERGE_MARKER,
    VLLMBackend,
    adapter_rank,
    answers_from_outputs,
    build_prompts,
    engine_kwargs,
    merge_adapter_for_vllm,
    merged_weights_dir,
    request_sampling_kwargs,
    sampling_kwargs,
)
from vstar.testing.fake_vllm import FakeCompletion, FakeLLM, FakeRequestOutput
from vstar.testing.fake_vllm import install as install_fake_vllm
from vstar.train.collator import video_model_inputs
from vstar.video import sample_frames


# -- the stand-in for the `vllm` package (vstar.testing.fake_vllm) -------------------------------------------
@pytest.fixture
def fake_vllm(monkeypatch):
    return install_fake_vllm(monkeypatch)


def echoed(request: GenerationRequest, frames: int = 8, fps: float = 8) -> str:
    return f"{request.prompt} | {frames} frames at {fps:g} fps"


# -- data -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rows(shapes_dir):
    from datasets import load_dataset

    return list(load_dataset(str(shapes_dir), split="test").select(range(6)))


def make_requests(rows, attempts=("direct",)) -> list[GenerationRequest]:
    return [
        GenerationRequest(r["id"], attempt, f"Q{i}: what colour is the square?", f"P{i} {attempt}", r["video"])
        for i, r in enumerate(rows)
        for attempt in attempts
    ]


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dirs, tmp_path_factory) -> Path:
    """A LoRA adapter on two projections of the tiny Qwen2.5-VL's language model, with non-zero updates."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(0)
    base = AutoModelForImageTextToText.from_pretrained(tiny_model_dirs["qwen2_5_vl"])
    # `init_lora_weights=False` draws both factors at random, so the merge changes the weights it touches.
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    out = tmp_path_factory.mktemp("adapters") / "cycle-1-model"
    get_peft_model(base, config).save_pretrained(out)
    return out


# -- without vLLM ---------------------------------------------------------------------------------------------
def test_missing_vllm_names_the_extra_and_the_default_backend(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    assert "vllm" in BACKENDS
    for build in (
        lambda: VLLMBackend("unused-model"),
        lambda: get_backend(GenerationSettings(backend="vllm"), "unused-model"),
    ):
        with pytest.raises(ImportError) as info:
            build()
        assert "pip install 'vstar[vllm]'" in str(info.value)
        assert "CUDA GPU" in str(info.value)
        assert "generation_backend: transformers" in str(info.value)


def test_unknown_lora_mode_is_refused_before_anything_loads(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ValueError, match="lora_mode must be one of request, merge, not 'merged'"):
        VLLMBackend("unused-model", settings=GenerationSettings(backend="vllm", lora_mode="merged"))


def test_sampling_kwargs_greedy_at_zero_temperature():
    greedy = sampling_kwargs(GenerationSettings(max_new_tokens=32, temperature=0.0, top_p=0.8, seed=5))
    assert greedy == {"max_tokens": 32, "temperature": 0.0, "top_p": 1.0}
    sampled = sampling_kwargs(GenerationSettings(max_new_tokens=32, temperature=0.7, top_p=0.8, seed=5))
    assert sampled == {"max_tokens": 32, "temperature": 0.7, "top_p": 0.8, "seed": 5}


def test_engine_kwargs():
    settings = GenerationSettings(tensor_parallel_size=2, gpu_memory_utilization=0.8, seed=3, max_lora_rank=32)
    kwargs = engine_kwargs("org/model", settings)
    assert kwargs == {
        "model": "org/model",
        "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.8,
        "seed": 3,
        "limit_mm_per_prompt": {"video": 1},
    }
    settings.max_model_len = 4096
    kwargs = engine_kwargs("org/model", settings, tokenizer="org/processor", enable_lora=True)
    assert kwargs["max_model_len"] == 4096 and kwargs["tokenizer"] == "org/processor"
    assert (kwargs["enable_lora"], kwargs["max_lora_rank"], kwargs["max_loras"]) == (True, 32, 1)


@pytest.mark.parametrize(
    ("num_frames", "video_fps", "start", "end", "expected_frames"),
    [(8, None, None, None, 8), (4, None, 0.25, 0.75, 4), (None, 4.0, None, None, 4)],
)
def test_prompts_hold_the_chat_text_and_frames_with_their_timing(
    tiny_model_dirs, rows, num_frames, video_fps, start, end, expected_frames
):
    from transformers import AutoProcessor
    from transformers.video_utils import VideoMetadata

    processor = AutoProcessor.from_pretrained(tiny_model_dirs["qwen2_5_vl"])
    settings = GenerationSettings(num_frames=num_frames, video_fps=video_fps)
    requests = make_requests(rows[:3])
    for r in requests:
        r.start, r.end = start, end
    prompts = build_prompts(processor, requests, settings)
    assert len(prompts) == 3
    for request, prompt in zip(requests, prompts):
        assert set(prompt) == {"prompt", "multi_modal_data"}
        text = prompt["prompt"]
        assert text == f"<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>{request.prompt}<|im_end|>\n" + (
            "<|im_start|>assistant\n"
        )
        frames, metadata = prompt["multi_modal_data"]["video"]
        clip = sample_frames(request.video, num_frames=num_frames, fps=video_fps, start=start, end=end)
        assert frames.dtype == "uint8" and frames.shape == (expected_frames, 64, 64, 3)
        assert (frames == clip.frames).all()
        assert metadata["do_sample_frames"] is False
        assert metadata["fps"] == 8.0 and metadata["frames_indices"] == clip.indices
        assert metadata["total_num_frames"] == clip.window_num_frames == (4 if start is not None else 8)
        assert json.loads(json.dumps(metadata)) == metadata  # plain values only

        # vLLM (0.10+) turns the dict into the processor's `VideoMetadata`: the model must get the frame rate and
        # timing the transformers backend gives it.
        hf_metadata = VideoMetadata(**{k: v for k, v in metadata.items() if k != "do_sample_frames"})
        via_vllm = processor(text=[text], videos=[frames], video_metadata=[hf_metadata], return_tensors="pt")
        via_transformers = video_model_inputs(processor, [text], [clip])
        assert via_vllm["second_per_grid_ts"] == via_transformers["second_per_grid_ts"]
        assert via_vllm["video_grid_thw"].tolist() == via_transformers["video_grid_thw"].tolist()
        # Two frames per temporal patch: seconds per grid step = 2 / sampled fps.
        assert via_vllm["second_per_grid_ts"][0] == pytest.approx(2 / (video_fps or 8.0))


def test_answers_follow_request_order_and_empty_outputs_name_the_request(rows):
    requests = make_requests(rows[:3])
    outputs = [FakeRequestOutput(str(i), [FakeCompletion(f" answer {i}\n")]) for i in (12, 10, 11)]
    assert answers_from_outputs(outputs, requests) == ["answer 10", "answer 11", "answer 12"]
    # Request ids that are not counters: the order given is kept.
    outputs = [FakeRequestOutput(f"req-{i}", [FakeCompletion(f"answer {i}")]) for i in (2, 0, 1)]
    assert answers_from_outputs(outputs, requests) == ["answer 2", "answer 0", "answer 1"]
    outputs = [FakeRequestOutput("0", [FakeCompletion("a")]), FakeRequestOutput("1"), FakeRequestOutput("2")]
    with pytest.raises(RuntimeError, match=f"no completion for request '{requests[1].id}' \\(direct\\)"):
        answers_from_outputs(outputs, requests)
    with pytest.raises(RuntimeError, match="2 outputs for 3 prompts"):
        answers_from_outputs(outputs[:2], requests)


def test_text_only_requests_get_no_video_and_share_a_batch(fake_vllm, tiny_model_dirs, rows):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dirs["qwen2_5_vl"])
    settings = GenerationSettings(num_frames=4, max_new_tokens=32, temperature=0.5, seed=2)
    video = make_requests(rows[:2])
    text = [
        GenerationRequest("summary-0", "summary", "", "Summarise: a square moves."),
        GenerationRequest("summary-1", "summary", "", "Summarise again.", system="Be brief.", max_new_tokens=7),
    ]
    requests = [video[0], text[0], video[1], text[1]]
    prompts = build_prompts(processor, requests, settings)
    assert [set(p) for p in prompts] == [{"prompt", "multi_modal_data"}, {"prompt"}] * 2
    assert prompts[1]["prompt"] == "<|im_start|>user\nSummarise: a square moves.<|im_end|>\n<|im_start|>assistant\n"
    assert prompts[3]["prompt"].startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nSummarise")
    for prompt, request in ((prompts[0], video[0]), (prompts[2], video[1])):  # each clip with its own request
        frames, _ = prompt["multi_modal_data"]["video"]
        assert (frames == sample_frames(request.video, num_frames=4).frames).all()
    kwargs = request_sampling_kwargs(requests, settings)
    assert [k["max_tokens"] for k in kwargs] == [32, 32, 32, 7]
    assert all({**k, "max_tokens": 32} == sampling_kwargs(settings) for k in kwargs)

    backend = get_backend(
        GenerationSettings(backend="vllm", num_frames=4, decode_workers=0), str(tiny_model_dirs["qwen2_5_vl"])
    )
    answers = backend.generate(requests)
    assert answers == [
        echoed(video[0], 4, 8),
        "Summarise: a square moves. | text only",
        echoed(video[1], 4, 8),
        "Summarise again. | text only",
    ]
    # One SamplingParams per prompt when a request sets its own limit; the shared one otherwise.
    params = FakeLLM.instances[-1].calls[-1]["sampling_params"]
    assert [p.kwargs["max_tokens"] for p in params] == [256, 256, 256, 7]
    backend.generate(requests[:3])
    assert FakeLLM.instances[-1].calls[-1]["sampling_params"] is backend.sampling_params


# -- merged weights -------------------------------------------------------------------------------------------
def test_merge_writes_loadable_weights_changed_only_where_lora_applied(tiny_model_dirs, adapter_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    base_dir = str(tiny_model_dirs["qwen2_5_vl"])
    merged_dir = merge_adapter_for_vllm(base_dir, str(adapter_dir))
    assert merged_dir == adapter_dir.parent / "cycle-1-model-merged-for-vllm"
    assert merged_dir == merged_weights_dir(str(adapter_dir), adapter_dir)
    assert not (adapter_dir / "merged-for-vllm").exists()  # the adapter directory stays the adapter alone
    assert not [p for p in adapter_dir.parent.iterdir() if p.name.startswith(".")]  # no staging left behind
    assert not (merged_dir / "adapter_config.json").exists()
    assert json.loads((merged_dir / "config.json").read_text())["architectures"] == [
        "Qwen2_5_VLForConditionalGeneration"
    ]
    AutoProcessor.from_pretrained(merged_dir)

    base = AutoModelForImageTextToText.from_pretrained(base_dir).state_dict()
    merged = AutoModelForImageTextToText.from_pretrained(merged_dir).state_dict()
    assert base.keys() == merged.keys()
    changed = {name for name in base if not torch.equal(base[name], merged[name])}
    lora_targets = {n for n in base if n.endswith(("q_proj.weight", "v_proj.weight"))}
    assert lora_targets and changed == lora_targets

    # Reused while the adapter is unchanged, rebuilt when it changes.
    marker = (merged_dir / MERGE_MARKER).read_text()
    stamp = (merged_dir / MERGE_MARKER).stat().st_mtime_ns
    assert merge_adapter_for_vllm(base_dir, str(adapter_dir)) == merged_dir
    assert (merged_dir / MERGE_MARKER).stat().st_mtime_ns == stamp
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    (adapter_dir / "adapter_config.json").write_text(json.dumps({**config, "lora_alpha": 32}))
    try:
        merge_adapter_for_vllm(base_dir, str(adapter_dir))
        assert (merged_dir / MERGE_MARKER).read_text() != marker
        rebuilt = AutoModelForImageTextToText.from_pretrained(merged_dir).state_dict()
        name = sorted(lora_targets)[0]
        assert torch.allclose(rebuilt[name] - base[name], 2 * (merged[name] - base[name]), atol=1e-5)
    finally:
        (adapter_dir / "adapter_config.json").write_text(json.dumps(config))
    assert not [p for p in adapter_dir.parent.iterdir() if p.name.startswith(".")]


# -- the backend with a stand-in engine -----------------------------------------------------------------------
def test_backend_serves_an_adapter_per_request_or_merged(fake_vllm, tiny_model_dirs, adapter_dir, rows):
    base_dir = str(tiny_model_dirs["qwen2_5_vl"])
    settings = GenerationSettings(backend="vllm", tensor_parallel_size=2, max_lora_rank=16, decode_workers=0)
    backend = get_backend(settings, base_dir, str(adapter_dir))
    assert isinstance(backend, VLLMBackend) and backend.generator == f"{base_dir}+{adapter_dir}"
    llm = FakeLLM.instances[-1]
    assert llm.kwargs["model"] == base_dir and llm.kwargs["enable_lora"] and llm.kwargs["max_lora_rank"] == 16
    assert llm.kwargs["tensor_parallel_size"] == 2 and llm.kwargs["limit_mm_per_prompt"] == {"video": 1}
    assert backend.sampling_params.kwargs == sampling_kwargs(settings)
    requests = make_requests(rows[:2])
    assert backend.generate(requests) == [echoed(r) for r in requests]
    lora = llm.calls[-1]["lora_request"]
    assert (lora.lora_int_id, Path(lora.lora_path)) == (1, adapter_dir.resolve())

    assert adapter_rank(json.loads((adapter_dir / "adapter_config.json").read_text())) == 8
    with pytest.raises(ValueError, match="LoRA rank 8, above max_lora_rank 1"):
        VLLMBackend(base_dir, str(adapter_dir), GenerationSettings(max_lora_rank=1))

    settings = GenerationSettings(backend="vllm", lora_mode="merge", decode_workers=0)
    backend = get_backend(settings, base_dir, str(adapter_dir))
    llm = FakeLLM.instances[-1]
    assert llm.kwargs["model"] == str(merged_weights_dir(str(adapter_dir), adapter_dir))
    assert "enable_lora" not in llm.kwargs and backend.lora_request is None
    assert backend.generate(requests) == [echoed(r) for r in requests]
    assert llm.calls[-1]["lora_request"] is None


def test_adapter_from_the_hub(fake_vllm, hub_env, tiny_model_dirs, adapter_dir, monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf-home"))
    hub_env.api.create_repo("vstar-org/tiny-adapter")
    hub_env.api.upload_folder(folder_path=str(adapter_dir), repo_id="vstar-org/tiny-adapter")
    base_dir = str(tiny_model_dirs["qwen2_5_vl"])

    backend = VLLMBackend(base_dir, "vstar-org/tiny-adapter", GenerationSettings(decode_workers=0))
    snapshot = Path(backend.lora_request.lora_path)
    assert snapshot.is_relative_to(hub_env.hub_cache) and (snapshot / "adapter_config.json").is_file()

    VLLMBackend(base_dir, "vstar-org/tiny-adapter", GenerationSettings(lora_mode="merge", decode_workers=0))
    merged = Path(FakeLLM.instances[-1].kwargs["model"])
    assert merged == tmp_path / "hf-home" / "vstar" / f"vstar-org--tiny-adapter-{snapshot.name}-merged-for-vllm"
    assert (merged / "config.json").is_file() and (merged / MERGE_MARKER).is_file()


def test_run_generation_resumes_through_chunk_files(fake_vllm, tiny_model_dirs, rows, tmp_path):
    model = str(tiny_model_dirs["qwen2_5_vl"])
    requests = make_requests(rows, attempts=("direct", "rationalized"))
    settings = GenerationSettings(backend="vllm", batch_size=4, chunk_size=4, decode_workers=2)

    # The engine dies on its third batch: the two finished chunks stay on disk.
    FakeLLM.fail_on_call = 3
    with pytest.raises(RuntimeError, match="engine died"):
        run_generation(requests, get_backend(settings, model), tmp_path, "direct", settings, rank=0, world_size=1)
    assert len(read_generations(tmp_path, "direct")) == 8

    FakeLLM.fail_on_call = None
    assert run_generation(requests, get_backend(settings, model), tmp_path, "direct", settings, 0, 1) == 4
    assert sum(len(call["prompts"]) for call in FakeLLM.instances[-1].calls) == 4
    rows_out = read_generations(tmp_path, "direct")
    expected = {(r.id, r.attempt): r for r in requests}
    assert [(r["id"], r["attempt"]) for r in rows_out] == sorted(expected)
    for row in rows_out:
        request = expected[(row["id"], row["attempt"])]
        assert (row["question"], row["prompt"]) == (request.question, request.prompt)
        assert row["answer"] == echoed(request) and row["generator"] == model
    assert run_generation(requests, get_backend(settings, model), tmp_path, "direct", settings, 0, 1) == 0


def test_samples_of_one_prompt_share_a_decoded_clip_and_draw_with_their_own_seeds(
    fake_vllm, tiny_model_dirs, rows, monkeypatch
):
    # vLLM seeds each request's sampler: samples of one prompt with one seed would all be the same answer.
    import vstar.generate.vllm as vllm_backend
    from vstar.generate.base import build_requests
    from vstar.tasks.base import get_task

    decoded = []
    real = vllm_backend.sample_clip
    monkeypatch.setattr(vllm_backend, "sample_clip", lambda r, s: decoded.append(r.id) or real(r, s))
    settings = GenerationSettings(backend="vllm", num_frames=4, temperature=0.8, seed=5, decode_workers=0)
    backend = get_backend(settings, str(tiny_model_dirs["qwen2_5_vl"]))
    requests = build_requests(get_task("shapes"), rows[:2], "direct", seed=0, num_samples=3)
    backend.generate(requests)
    assert decoded == [rows[0]["id"], rows[1]["id"]]  # one decode per clip, not per sample
    call = FakeLLM.instances[-1].calls[-1]
    assert [p.kwargs["seed"] for p in call["sampling_params"]] == [5, 6, 7, 5, 6, 7]
    frames = [prompt["multi_modal_data"]["video"][0] for prompt in call["prompts"]]
    assert all((f == frames[0]).all() for f in frames[:3]) and not (frames[0] == frames[3]).all()
    # Greedy decoding needs no seed per sample: the one shared SamplingParams.
    backend.use_settings(GenerationSettings(backend="vllm", num_frames=4, temperature=0.0, decode_workers=0))
    backend.generate(requests)
    assert FakeLLM.instances[-1].calls[-1]["sampling_params"] is backend.sampling_params
