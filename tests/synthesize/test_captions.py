"""`vstar caption`: the three levels on a scripted 72 s video, resumption, label hints, bad input, CLI and API.

The teacher is a real tiny Qwen2.5-VL trained to answer in the caption format (`vstar.testing.teachers`); clips are
real mp4 files decoded by PyAV. The wrappers below only watch the real backend (or, where a test needs a teacher
to fail in a given way, replace one clip's answer, as a server would).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from caption_scripts import EVENTS, colour_at, scripted_frames, write_source
from datasets import load_dataset

from vstar.errors import ConfigError
from vstar.generate.base import GenerationBackend, GenerationSettings, RequestFailed, sample_clip
from vstar.synthesize import CAPTION_FEATURES, CaptionConfig, caption
from vstar.synthesize.caption_parse import clean_caption
from vstar.synthesize.captions import CaptionPrompts, Step, parse_caption_args, plan_steps
from vstar.video import write_video

# As `caption_settings` makes them: level-1 windows at 1 frame per second.
SETTINGS = dict(batch_size=8, max_new_tokens=64, chunk_size=8, decode_workers=0, video_fps=1.0, num_frames=None)


class Watched(GenerationBackend):
    """The real backend, with every request it is asked recorded (and, for some clips, a scripted answer)."""

    def __init__(self, inner: GenerationBackend, answers: dict | None = None, stop_after: int | None = None):
        self.inner, self.answers, self.stop_after = inner, answers or {}, stop_after
        self.generator, self.model_name, self.adapter_name = inner.generator, inner.model_name, inner.adapter_name
        self.asked: list = []
        self.colours: dict[tuple[str, float], int] = {}
        self.frames: dict[tuple[str, float], int] = {}

    def prepare(self, requests):
        for r in requests:
            if r.video is not None:
                clip = sample_clip(r, self.inner.settings)
                self.colours[(r.id, r.start)] = colour_at(clip.frames[len(clip.frames) // 2])
                self.frames[(r.id, r.start)] = len(clip.frames)
        return list(requests), self.inner.prepare(requests)

    def generate_prepared(self, prepared):
        requests, inner = prepared
        if self.stop_after is not None and len(self.asked) >= self.stop_after:
            raise KeyboardInterrupt("killed mid level 1")
        self.asked += requests
        answers = self.inner.generate_prepared(inner)
        return [self.answers.get(r.id, a) for r, a in zip(requests, answers)]


@pytest.fixture(scope="module")
def teacher_backend(format_teacher):
    from vstar.generate.base import get_backend

    torch.set_num_threads(1)
    return get_backend(GenerationSettings(**SETTINGS), str(format_teacher))


def entry(path: Path) -> dict:
    return {"path": str(path), "bytes": None}


# --- parsing ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("A red square moves left.", "A red square moves left."),
        ("**Description:** A red square  moves\nleft.<|im_end|>", "A red square moves left."),
        ("Summary: So far one square moved.", "So far one square moved."),
        ("```\nThe square turns blue.\n```", "The square turns blue."),
    ],
)
def test_usable_outputs_lose_their_wrapping(raw, text):
    assert clean_caption(raw) == (text, None)


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (None, "empty"),
        ("   \n ", "empty"),
        ("<|im_end|><|endoftext|>", "empty"),
        ("Square.", "too short"),
        ("I'm sorry, but I cannot describe this video.", "refusal"),
        ("the square the square moves moves moves moves moves moves moves", "repetition"),
        (" ".join(["red square moving left"] * 12), "repetition"),
        ('[{"Dimension": "count", "Question": "How many?", "Answer": "One."}]', "not prose"),
        ("0x3f 0x3f 0x3f 12 99 %% ## 881 ?? ab", "garbled"),
        ("A squ\ufffd\ufffdre mo\ufffdves", "garbled"),
    ],
)
def test_garbage_is_named(raw, kind):
    text, reason = clean_caption(raw)
    assert text is None and reason.startswith(kind), reason


# --- schedule and settings -------------------------------------------------------------------------------------


def test_schedule_of_windows_summaries_and_the_whole():
    steps = plan_steps(72.0, 10.0, 30.0, 1.0)
    assert [s.level for s in steps] == [1, 1, 1, 2, 1, 1, 1, 2, 1, 1, 3]
    assert [(s.start, s.end) for s in steps if s.level == 1][-2:] == [(60.0, 70.0), (70.0, 72.0)]
    assert [s.end for s in steps if s.level == 2] == [30.0, 60.0]
    # A summary at the very end would repeat level 3: none there. A tail shorter than a frame joins its window.
    assert [s.level for s in plan_steps(60.0, 10.0, 30.0, 1.0)] == [1, 1, 1, 2, 1, 1, 1, 3]
    assert plan_steps(20.4, 10.0, 30.0, 1.0)[-2] == Step(1, 10.0, 20.4)
    assert plan_steps(6.0, 10.0, 30.0, 1.0) == [Step(1, 0.0, 6.0), Step(3, 0.0, 6.0)]
    assert plan_steps(0.4, 10.0, 30.0, 1.0) == []


def test_settings_and_prompt_overrides_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="multiple of clip_seconds"):
        CaptionConfig(teacher=["m"], summary_seconds=25)
    with pytest.raises(ConfigError, match="--task"):
        CaptionConfig(teacher=["m"], label_hint=True)
    with pytest.raises(ConfigError, match="holds no frame"):
        CaptionConfig(teacher=["m"], fps=0.05)
    with pytest.raises(ConfigError, match=r"lacks \{context\}"):
        CaptionPrompts.load({"level1": "Describe {start} to {end}. {hint}"})
    config, settings = parse_caption_args(["--teacher", "a", "--batch_size", "4", "--teacher=b", "--teacher", "c"])
    assert config.teacher == ["a", "b", "c"] and settings.batch_size == 4
    override = tmp_path / "level3.txt"
    override.write_text("WHOLE {duration} s.\n{context}\n{hint}\nDescribe it all.\n")
    config = CaptionConfig(teacher=["m"], prompts=json.dumps({"level3": str(override)}))
    assert CaptionPrompts.load(config.prompts).level3.startswith("WHOLE {duration}")


def test_a_teacher_is_a_folder_a_hub_id_or_a_served_model():
    from vstar.synthesize.captions import split_teacher, teacher_name, teacher_slug

    assert split_teacher("Qwen/Qwen2.5-VL-7B-Instruct", "vllm") == ("vllm", "Qwen/Qwen2.5-VL-7B-Instruct")
    assert split_teacher("endpoint:gpt-4o", "transformers") == ("endpoint", "gpt-4o")
    assert split_teacher("C:/models/tiny", "transformers") == ("transformers", "C:/models/tiny")
    served = GenerationSettings(backend="endpoint", endpoint_url="http://127.0.0.1:8000/v1")
    assert teacher_name("gpt-4o", "endpoint", None, served) == "gpt-4o@127.0.0.1:8000"
    assert teacher_slug("endpoint:gpt-4o") != teacher_slug("gpt-4o") and "/" not in teacher_slug("a/b")


# --- the three levels ------------------------------------------------------------------------------------------


def test_three_levels_of_a_scripted_video_with_label_hints(tmp_path, long_video, teacher_backend):
    short = write_video(tmp_path / "short.mp4", scripted_frames(seconds=8), fps=2)
    source = write_source(
        tmp_path,
        [
            {"id": "long", "video": entry(long_video), "label": "red square moving"},
            {"id": "short", "video": entry(short), "label": "blue square moving"},
        ],
    )
    watched = Watched(teacher_backend)
    config = CaptionConfig(
        dataset=str(source), teacher=["tiny"], output=str(tmp_path / "caps"), label_hint=True, task="shapes"
    )
    out = caption(config, GenerationSettings(**SETTINGS), backends={"tiny": watched})

    kept = load_dataset(str(out))["train"]
    rejected = load_dataset(str(out), "rejected")["train"]
    assert set(CAPTION_FEATURES) <= set(kept.features) and kept.features["label"].names[0] == "red square moving"
    (row,) = kept.to_list()
    assert row["id"] == "long" and row["teacher"].startswith(f"{teacher_backend.model_name}@sha256:")
    assert row["video"]["path"] == str(long_video) and row["label"] == 0
    assert all(n == 10 for (clip, start), n in watched.frames.items() if clip == "long" and start < 70)
    spans = [(s["start"], s["end"]) for s in row["clip_descriptions"]]
    assert spans == [(10.0 * k, 10.0 * k + 10) for k in range(7)] + [(70.0, 72.0)]
    assert [(s["start"], s["end"]) for s in row["summaries"]] == [(0.0, 30.0), (0.0, 60.0)]
    # Every text is the model's own output, cleaned: it passes the parser, and the verifier found the label in it.
    for text in [s["text"] for s in row["clip_descriptions"] + row["summaries"]] + [row["description"]]:
        assert clean_caption(text) == (text, None)

    asked = [r for r in watched.asked if r.id == "long"]
    assert Counter(r.question.split(":")[0] for r in asked) == {"level 1": 8, "level 2": 2, "level 3": 1}
    # Level 1 saw the frames of its window: the square's colour changes where the script changes it.
    for (clip, start), colour in watched.colours.items():
        if clip == "long":
            _, rgb, _ = [e for e in EVENTS if e[0] <= start + 5][-1]
            assert colour == max(range(3), key=lambda c: rgb[c])
    # The recurrent context: window 40-50 gets the 30 s summary and the 30-40 description, not what came before.
    by_question = {r.question: r for r in asked}
    first_summary, second_summary = (s["text"] for s in row["summaries"])
    window = by_question["level 1: 40-50 s"]
    assert window.video is not None and (window.start, window.end) == (40.0, 50.0)
    assert "Summary of the video up to second 30: " + first_summary in window.prompt
    assert "Second 30 to 40: " + row["clip_descriptions"][3]["text"] in window.prompt
    assert "Second 20 to 30" not in window.prompt
    # Level 2 at 60 s: the previous summary and the three descriptions since; text only.
    summary = by_question["level 2: 0-60 s"]
    assert summary.video is None and first_summary in summary.prompt
    assert [f"Second {a} to {a + 10}" in summary.prompt for a in (20, 30, 40, 50)] == [False, True, True, True]
    # Level 3: the latest summary and the descriptions after it; the hint asks it to state the label.
    whole = by_question["level 3: 0-72 s"]
    assert whole.video is None and second_summary in whole.prompt and "Second 70 to 72" in whole.prompt
    assert "known: red square moving" in whole.prompt and "last sentence must state it" in whole.prompt
    assert all("known: red square moving" in r.prompt for r in asked)

    # The 8 s clip: one window and the whole; its description contradicts the hinted label, so it is rejected.
    assert Counter(r.question.split(":")[0] for r in watched.asked if r.id == "short") == {"level 1": 1, "level 3": 1}
    (bad,) = rejected.to_list()
    assert bad["id"] == "short" and bad["reason"].startswith("label:")
    assert not bad["verification"]["passed"] and bad["verification"]["fields"][0]["expected"] == "blue square moving"
    assert [o["level"] for o in bad["raw_outputs"]] == [1, 3] and bad["raw_outputs"][1]["text"] == bad["description"]
    assert all("known: blue square moving" in r.prompt for r in watched.asked if r.id == "short")

    report = json.loads((out / "caption_report.json").read_text())
    assert report["kept"] == 1 and report["rejected"] == 1 and report["rejected_reasons"] == {"label": 1}
    card = (out / "README.md").read_text()
    assert "config_name: rejected" in card and "label" in card


def test_killed_run_resumes_without_asking_a_finished_window(tmp_path, long_video, teacher_backend):
    source = write_source(tmp_path, [{"id": f"v{i}", "video": entry(long_video)} for i in range(3)])
    settings = GenerationSettings(**{**SETTINGS, "batch_size": 1, "chunk_size": 2})
    config = CaptionConfig(dataset=str(source), teacher=["tiny"], output=str(tmp_path / "caps"))
    # Killed in round 2 (level 1), between the two windows of its first chunk: round 1's chunks are written.
    killed = Watched(teacher_backend, stop_after=4)
    with pytest.raises(KeyboardInterrupt):
        caption(config, settings, backends={"tiny": killed})
    finished = {(r.id, r.question) for r in killed.asked}
    assert len(finished) == 4

    resumed = Watched(teacher_backend)
    out = caption(config, settings, backends={"tiny": resumed})
    again = {(r.id, r.question) for r in resumed.asked}
    # Finished windows were not asked again: round 1's three written windows are reused; the window of the chunk
    # that was cut off was never written, so it is asked again.
    assert finished & again == {("v0", "level 1: 10-20 s")} and len(again) == 3 * 11 - 3
    rows = load_dataset(str(out))["train"].to_list()
    assert [r["id"] for r in rows] == ["v0", "v1", "v2"]
    assert all(len(r["clip_descriptions"]) == 8 and len(r["summaries"]) == 2 for r in rows)
    # A third run has nothing left to ask.
    idle = Watched(teacher_backend)
    caption(config, settings, backends={"tiny": idle})
    assert idle.asked == []


def test_bad_inputs_and_failing_teachers_are_reported_on_their_rows(tmp_path, teacher_backend, format_teacher):
    good = write_video(tmp_path / "good.mp4", scripted_frames(seconds=12), fps=2)
    blip = write_video(tmp_path / "blip.mp4", scripted_frames(seconds=1)[:1], fps=4)  # 0.25 s: under 1/fps
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    source = write_source(
        tmp_path,
        [
            {"id": "good", "video": entry(good)},
            {"id": "empty-answer", "video": entry(good)},
            {"id": "server-error", "video": entry(good)},
            {"id": "blip", "video": entry(blip)},
            {"id": "broken", "video": entry(broken)},
            {"id": "missing", "video": entry(tmp_path / "nowhere.mp4")},
        ],
    )
    scripted = Watched(
        teacher_backend, answers={"empty-answer": "", "server-error": RequestFailed("server_error", "HTTP 503")}
    )
    settings = GenerationSettings(**SETTINGS)
    config = CaptionConfig(dataset=str(source), teacher=["tiny", "second"], output=str(tmp_path / "caps"))
    out = caption(config, settings, backends={"tiny": scripted, "second": Watched(teacher_backend)})
    kept = load_dataset(str(out))["train"].to_list()
    rejected = load_dataset(str(out), "rejected")["train"].to_list()
    assert len({r["teacher"] for r in kept + rejected}) == 1  # both values name one folder, pinned the same
    # One row per (clip, teacher): the second teacher was not scripted to fail, so it captions those two clips.
    assert Counter(r["id"] for r in kept) == {"good": 2, "empty-answer": 1, "server-error": 1}
    assert Counter(r["id"] for r in rejected) == {
        "empty-answer": 1,
        "server-error": 1,
        "blip": 2,
        "broken": 2,
        "missing": 2,
    }
    reasons = {r["id"]: r["reason"] for r in rejected}
    assert reasons["empty-answer"].startswith("level 1 (0-10 s): empty")
    assert reasons["server-error"] == "level 1 (0-10 s): HTTP 503"
    assert reasons["blip"].startswith("too short: 0.250 s")
    assert reasons["broken"].startswith("video: ") and reasons["missing"].startswith("video: missing")
    failed = next(r for r in rejected if r["id"] == "empty-answer")
    assert failed["raw_outputs"] == [{"level": 1, "start": 0.0, "end": 10.0, "text": ""}]
    assert failed["description"] is None and failed["clip_descriptions"] == []
    report = json.loads((out / "caption_report.json").read_text())
    assert report["rejected_reasons"]["level 1: empty"] == 1 and report["rejected_reasons"]["too short"] == 2


# --- command line and API ----------------------------------------------------------------------------------------


def test_cli_help_and_a_small_run(tmp_path, format_teacher, capsys):
    from vstar.cli import main

    main(["caption", "--help"])
    help_text = capsys.readouterr().out
    assert "--clip_seconds" in help_text and "--label_hint" in help_text and "--teacher" in help_text
    with pytest.raises(SystemExit) as exit_info:
        main(["caption", "--dataset", str(tmp_path), "--output", str(tmp_path / "x")])
    assert exit_info.value.code != 0 and "give at least one --teacher" in capsys.readouterr().err

    clip = write_video(tmp_path / "clip.mp4", scripted_frames(seconds=14), fps=2)
    source = write_source(tmp_path, [{"id": "c", "video": entry(clip)}])
    recipe = tmp_path / "caption.yaml"
    recipe.write_text(f"dataset: {source}\nclip_seconds: 5\nsummary_seconds: 10\nmax_new_tokens: 64\n")
    out = tmp_path / "caps"
    main(["caption", "--config", str(recipe), "--teacher", str(format_teacher), "--output", str(out)])
    (row,) = load_dataset(str(out))["train"].to_list()
    assert [(s["start"], s["end"]) for s in row["clip_descriptions"]] == [(0.0, 5.0), (5.0, 10.0), (10.0, 14.0)]
    assert [s["end"] for s in row["summaries"]] == [10.0] and row["description"]


@pytest.mark.slow
def test_two_processes_share_every_round(tmp_path, long_video, format_teacher):
    source = write_source(tmp_path, [{"id": f"v{i}", "video": entry(long_video)} for i in range(2)])
    out = tmp_path / "caps"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "vstar.cli",
        "caption", "--dataset", str(source), "--teacher", str(format_teacher), "--output", str(out),
        "--batch_size", "1", "--chunk_size", "1", "--max_new_tokens", "64", "--decode_workers", "1",
    ]  # fmt: skip
    result = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    ranks = {p.name.split("-rank")[1][:3] for p in (out / "generations").glob("*-rank*-*.parquet")}
    assert ranks == {"000", "001"}
    rows = load_dataset(str(out))["train"].to_list()
    assert [r["id"] for r in rows] == ["v0", "v1"] and all(len(r["clip_descriptions"]) == 8 for r in rows)
