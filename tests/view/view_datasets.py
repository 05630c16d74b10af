"""Datasets of the second path for the viewer's tests, written by the real writers: a QA dataset (`assemble_qa` +
`write_qa_dataset`), a caption dataset (`write_captions`), a selection dataset of `vstar select`'s columns and a run's
instruction rows, which have none of the QA and caption columns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from datasets import Features, Value

from vstar.io import split_file, write_parquet

TEACHER_A, TEACHER_B = "teacher-a@sha256:aaa", "teacher-b@sha256:bbb"


def clip_video(root: Path, name: str) -> dict:
    from vstar.video import write_video

    frames = np.random.default_rng(0).integers(0, 255, (8, 32, 32, 3), np.uint8)
    return {"path": str(write_video(root / "videos" / f"{name}.mp4", frames, fps=4)), "bytes": None}


def _items(types, choice: bool) -> str:
    return json.dumps(
        [
            {
                "Dimension": t.name,
                "Question": t.example["question"],
                "Answer": t.example["answer"],
                **({"Options": t.example["options"]} if choice else {}),
            }
            for t in types
        ]
    )


def qa_dataset(root: Path) -> Path:
    """Two teachers' descriptions of three clips, both formats, a few types each, and one malformed output."""
    from vstar.synthesize import QAConfig
    from vstar.synthesize.qa import assemble_qa, caption_keys, write_qa_dataset
    from vstar.synthesize.qa_parse import load_question_types

    types = {t.name: t for t in load_question_types()}
    pick = lambda *names: [types[n] for n in names]  # noqa: E731
    rows = [
        {"id": "c1", "video": clip_video(root, "c1"), "teacher": TEACHER_A, "description": "A dog runs to a ball."},
        {"id": "c2", "video": clip_video(root, "c2"), "teacher": TEACHER_A, "description": "A girl skips rope."},
        {"id": "c2", "video": clip_video(root, "c2"), "teacher": TEACHER_B, "description": "A girl jumps a rope."},
        {"id": "c3", "video": clip_video(root, "c3"), "teacher": TEACHER_B, "description": "A man rides off."},
    ]
    keys = caption_keys(rows)  # c1, c2#1, c2#2, c3
    answers = {
        ("c1", "open"): _items(pick("temporal", "count", "spatial"), choice=False),
        ("c1", "multiple_choice"): _items(pick("count", "causal"), choice=True),
        ("c2#1", "open"): _items(pick("count"), choice=False),
        ("c2#1", "multiple_choice"): _items(pick("binary"), choice=True),
        # Teacher b's items of c2 are other types than teacher a's: none is a near-duplicate of a's.
        ("c2#2", "open"): _items(pick("description-scene", "description-human"), choice=False),
        ("c2#2", "multiple_choice"): "Here you go: the questions!",  # malformed: a rejected row with no type
        ("c3", "open"): _items(pick("count", "binary"), choice=False),
        ("c3", "multiple_choice"): _items(pick("count"), choice=True),
    }
    generations = [
        {"id": key, "attempt": format, "answer": answer, "generator": "llm"}
        for (key, format), answer in answers.items()
    ]
    config = QAConfig(captions="captions", model="llm", output=str(root / "qa"))
    accepted, rejected, report = assemble_qa(rows, keys, generations, config, list(types.values()))
    assert len(accepted) == 3 + 2 + 1 + 1 + 2 + 2 + 1 and len(rejected) == 1
    return write_qa_dataset(root / "qa", accepted, rejected, report)


def caption_dataset(root: Path) -> Path:
    from vstar.synthesize.captions import CaptionConfig, caption_features, write_captions

    features = caption_features({"source": Value("string")})

    def caption(clip: str, teacher: str, description: str | None) -> dict:
        return {"id": clip, "video": clip_video(root, clip), "start": 0.0, "end": 2.0, "teacher": teacher,
                "clip_descriptions": [{"start": 0.0, "end": 2.0, "text": description}] if description else [],
                "summaries": [], "description": description, "source": "shapes"}  # fmt: skip

    kept = [
        caption("c1", TEACHER_A, "A red square moves left."),
        caption("c1", TEACHER_B, "A square slides to the left."),
        caption("c2", TEACHER_A, "A blue circle bounces."),
    ]
    failed = {**caption("c2", TEACHER_B, None), "reason": "level 1 (0-2 s): empty: the teacher wrote nothing"}
    failed.update(verification=None, raw_outputs=[{"level": 1, "start": 0.0, "end": 2.0, "text": ""}])
    config = CaptionConfig(dataset="clips", teacher=[TEACHER_A, TEACHER_B], output=str(root / "captions"))
    teachers = {
        TEACHER_A: {"kept": 2, "rejected": 0, "requests": {}},
        TEACHER_B: {"kept": 1, "rejected": 1, "requests": {}},
    }
    report = {"command": "vstar caption --dataset clips", "teachers": teachers}
    return write_captions(root / "captions", "train", kept, [failed], features, config, report)


def selection_dataset(root: Path) -> Path:
    from vstar.curate.select import SCORE_COLUMNS
    from vstar.synthesize.captions import caption_features

    features = Features({**caption_features(), **SCORE_COLUMNS})
    entry = clip_video(root, "c1")
    best = {"id": "c1", "video": entry, "start": 0.0, "end": 2.0, "teacher": TEACHER_B, "clip_descriptions": [],
            "summaries": [], "description": "A square slides.", "score": 0.75, "reason": None,
            "scores": [{"teacher": TEACHER_A, "score": 0.5}, {"teacher": TEACHER_B, "score": 0.75}]}  # fmt: skip
    low = {**best, "id": "c2", "teacher": TEACHER_A, "score": 0.05, "reason": "best score 0.0500 < min_score 0.2"}
    write_parquet(root / "selected" / split_file("train"), [best], features)
    write_parquet(root / "selected" / split_file("train", "rejected"), [low], features)
    return root / "selected"


def instruction_dataset(root: Path) -> Path:
    """A run's instruction rows (`vstar.schema.INSTRUCTION_FEATURES`): no question type, format or teacher."""
    from vstar.schema import INSTRUCTION_FEATURES, conversation

    rows = [
        {"id": f"i{i}", "video": clip_video(root, "c1"), "question": "What moves?", "answer": f"Answer {i}",
         "label": json.dumps({"label": "red square"}), "messages": conversation("What moves?", f"Answer {i}"),
         "rationalized": bool(i % 2), "cycle": 1, "verification": {"passed": True, "reason": "match", "fields": []}}
        for i in range(3)
    ]  # fmt: skip
    write_parquet(root / "instructions" / split_file("train"), rows, INSTRUCTION_FEATURES)
    return root / "instructions"


def llava_dataset(root: Path) -> Path:
    """QA rows imported from LLaVA-Video conversation JSON (`vstar build llava`): a format on every row, no teacher
    and no question type."""
    from vstar.sources.llava import LlavaConfig, build_llava

    clip_video(root, "l1")
    human = "<image>\nWhat is the man holding?\nA. A red umbrella.\nB. A paper bag.\nC. A phone.\nD. A dog.\n"
    records = [
        {"id": "l-open", "video": "l1.mp4", "conversations": [
            {"from": "human", "value": "<image>\nWhat does the man do?"}, {"from": "gpt", "value": "He waves."}]},
        {"id": "l-choice", "video": "l1.mp4", "conversations": [
            {"from": "human", "value": human + "Please respond with only the letter of the correct answer."},
            {"from": "gpt", "value": "B."}]},
    ]  # fmt: skip
    annotations = root / "llava.json"
    annotations.write_text(json.dumps(records))
    config = LlavaConfig(annotations=[str(annotations)], videos=str(root / "videos"), output=str(root / "llava"))
    return build_llava(config)
