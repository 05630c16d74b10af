"""A clip that went missing or cannot be decoded is skipped and reported; the rest of the pass is answered."""

import json
import logging
from pathlib import Path

from vstar.evaluate.run import evaluate_model
from vstar.generate.base import (
    GenerationRequest,
    GenerationSettings,
    get_backend,
    read_generations,
    read_skipped,
    run_generation,
)
from vstar.io import load_split, rows_with_class_names
from vstar.tasks.base import get_task

SETTINGS = dict(batch_size=4, chunk_size=4, max_new_tokens=6, decode_workers=2)


def broken_videos(shapes_dir, tmp_path) -> dict[str, object]:
    """Real mp4 files: a truncated one, one of random bytes, one deleted after the dataset was made."""
    data = load_split(str(shapes_dir), "train")[0]["video"]["bytes"]
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 3])
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(bytes(range(256)) * 16)
    return {"truncated": str(truncated), "noise": {"path": str(noise), "bytes": None}, "gone": str(tmp_path / "x.mp4")}


def test_bad_clips_are_skipped_and_listed_and_retried(tiny_model_dirs, shapes_dir, tmp_path, caplog):
    rows = load_split(str(shapes_dir), "train").select(range(10))
    requests = [GenerationRequest(r["id"], "direct", "What moves?", "What moves?", r["video"]) for r in rows]
    bad = broken_videos(shapes_dir, tmp_path)
    for request, video in zip(requests[2:9:3], bad.values()):  # ids 2, 5, 8: spread over chunks and batches
        request.video = video
    bad_ids = {requests[i].id for i in (2, 5, 8)}
    settings = GenerationSettings(**SETTINGS)
    backend = get_backend(settings, str(tiny_model_dirs["qwen2_5_vl"]))
    out = tmp_path / "gen"

    with caplog.at_level(logging.WARNING, logger="vstar.generate.base"):
        assert run_generation(requests, backend, out, "direct", settings, 0, 1) == 7
    answered = read_generations(out, "direct")
    assert sorted(r["id"] for r in answered) == sorted(r.id for r in requests if r.id not in bad_ids)
    skipped = read_skipped(out, "direct")
    assert {s["id"] for s in skipped} == bad_ids
    by_id = {s["id"]: s for s in skipped}
    assert by_id[requests[2].id]["video"] == bad["truncated"] and by_id[requests[8].id]["video"] == bad["gone"]
    assert all(s["error"] for s in skipped)
    for clip_id in bad_ids:  # one line per clip, naming it and its file
        assert any(clip_id in line and "Skipping clip" in line for line in caplog.text.splitlines())
    assert "3 of 10 clips could not be read" in caplog.text

    # The next run tries the skipped clips again: restored, one is answered; the others stay listed.
    Path(bad["gone"]).write_bytes(rows[8]["video"]["bytes"])  # the file is back where the dataset says
    assert run_generation(requests, backend, out, "direct", settings, 0, 1) == 1
    assert len(read_generations(out, "direct")) == 8
    assert {s["id"] for s in read_skipped(out, "direct")} == bad_ids - {requests[8].id}


def test_evaluation_scores_the_readable_clips_and_reports_the_rest(tiny_model_dirs, shapes_dir, tmp_path):
    rows = rows_with_class_names(load_split(str(shapes_dir), "test").select(range(6)))
    rows[1] = {**rows[1], "video": broken_videos(shapes_dir, tmp_path)["truncated"]}
    settings = GenerationSettings(**SETTINGS)
    backend = get_backend(settings, str(tiny_model_dirs["qwen2_5_vl"]))
    results = evaluate_model(backend, rows, get_task("shapes"), tmp_path / "eval", settings)
    assert results["metrics"]["num_examples"] == 5 and results["metrics"]["skipped"] == 1
    assert [s["id"] for s in results["skipped"]] == [rows[1]["id"]]
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert [p["id"] for p in saved["predictions"]] == [r["id"] for i, r in enumerate(rows) if i != 1]
