"""Several answers per clip: samples of one prompt share a decoded clip, resume and shard like single answers."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import vstar.generate.hf as hf
from vstar.generate.base import (
    GenerationRequest,
    GenerationSettings,
    answered_keys,
    build_requests,
    get_backend,
    read_generations,
    run_generation,
)
from vstar.io import SourceRows, load_split
from vstar.tasks.base import get_task


def _rows(shapes_dir, n):
    return SourceRows(load_split(shapes_dir, "test").select(range(n))).lazy_rows()


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl", "llava_onevision"])
def test_samples_of_one_prompt_are_decoded_once_and_answered_as_if_asked_apart(arch, tiny_model_dirs, shapes_dir,
                                                                               monkeypatch):  # fmt: skip
    settings = GenerationSettings(batch_size=16, max_new_tokens=8, num_frames=4)
    backend = get_backend(settings, str(tiny_model_dirs[arch]))
    requests = build_requests(get_task("shapes"), _rows(shapes_dir, 2), "direct", seed=0, num_samples=3)
    requests.append(GenerationRequest("note", "summary", "", "Summarise: a red square moves left."))
    assert [r.sample for r in requests[:3]] == [0, 1, 2]
    decoded = []
    real = hf.sample_clip
    monkeypatch.setattr(hf, "sample_clip", lambda request, s: decoded.append(request.id) or real(request, s))
    prefill_rows = []

    def record_prefill(module, args, kwargs):
        if kwargs["input_ids"].shape[1] > 1:  # a prefill, not a step of one new token
            prefill_rows.append(kwargs["input_ids"].shape[0])

    hook = backend.model.register_forward_pre_hook(record_prefill, with_kwargs=True)
    answers = backend.generate(requests)
    hook.remove()
    assert sorted(decoded) == [requests[0].id, requests[3].id]  # one decode per clip, not per sample
    assert prefill_rows == [3]  # one prefill per distinct prompt (2 clips and the note), not per sample
    # The same requests under distinct ids are processed one by one: greedy answers are the same.
    apart = [GenerationRequest(f"{r.id}/{r.sample}", r.attempt, r.question, r.prompt, r.video, r.start, r.end)
             for r in requests]  # fmt: skip
    assert answers == backend.generate(apart)


def test_sampled_answers_are_kept_per_sample_and_resume(warm_models, shapes_dir, tmp_path):
    settings = GenerationSettings(batch_size=8, max_new_tokens=24, temperature=1.5, seed=3, chunk_size=4)
    backend = get_backend(settings, str(warm_models["qwen2_5_vl"]))
    requests = build_requests(get_task("shapes"), _rows(shapes_dir, 3), "direct", seed=0, num_samples=4)
    assert run_generation(requests, backend, tmp_path, "direct", settings) == 12
    rows = read_generations(tmp_path, "direct")
    assert [(r["id"], r["sample"]) for r in rows] == [(r.id, r.sample) for r in sorted(requests, key=lambda r: r.key)]
    by_clip = {}
    for row in rows:
        by_clip.setdefault(row["id"], []).append(row["answer"])
    assert any(len(set(answers)) > 1 for answers in by_clip.values())  # sampling gave different answers
    # A run killed before its last chunk answers only that chunk again.
    last = sorted(tmp_path.glob("direct-rank000-*.parquet"))[-1]
    lost = pq.read_table(last).num_rows
    last.unlink()
    assert run_generation(requests, backend, tmp_path, "direct", settings) == lost == 4
    again = read_generations(tmp_path, "direct")
    assert [(r["id"], r["sample"]) for r in again] == [(r["id"], r["sample"]) for r in rows]


def test_answers_saved_before_samples_existed_count_as_sample_0(tmp_path):
    table = pa.table({"id": ["a"], "attempt": ["direct"], "question": ["q"], "prompt": ["p"], "answer": ["x"],
                      "generator": ["m"]})  # fmt: skip
    pq.write_table(table, tmp_path / "direct-rank000-00000.parquet")
    assert answered_keys(tmp_path, "direct") == {("a", "direct", 0)}
    assert read_generations(tmp_path, "direct")[0]["sample"] == 0


def test_num_samples_must_be_positive(shapes_dir):
    with pytest.raises(ValueError, match="at least 1"):
        build_requests(get_task("shapes"), _rows(shapes_dir, 1), "direct", seed=0, num_samples=0)
