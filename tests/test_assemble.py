"""Assembling a cycle's instruction dataset from verified answers: what is kept, flagged and rejected."""

import json

from datasets import load_dataset

from vstar.assemble import assemble_cycle, verify_generations
from vstar.cards import write_instruction_card
from vstar.configs import CycleConfig
from vstar.io import load_split
from vstar.tasks.base import get_task

TASK = get_task("shapes")


def source(clip_id: str, label: str) -> dict:
    return {"id": clip_id, "video": {"bytes": b"\x00", "path": f"{clip_id}.mp4"}, "start": 0.5, "end": None,
            "source": "shapes", "label": label, "speed": 5.0}  # fmt: skip


def generation(clip_id: str, attempt: str, answer: str, question: str = "What moves?") -> dict:
    prompt = question if attempt == "direct" else f"{question} (hint)"
    return {"id": clip_id, "attempt": attempt, "question": question, "prompt": prompt, "answer": answer,
            "generator": "tiny@0"}  # fmt: skip


def test_assemble_keeps_direct_and_rationalized_passes_and_rejects_the_rest(tmp_path):
    sources = {
        "a": source("a", "red square moving"),
        "b": source("b", "blue square moving"),
        "c": source("c", "green square moving"),
    }
    direct = verify_generations(
        [
            generation("a", "direct", "It is red and quick.\nAnswer: red square moving"),
            generation("b", "direct", "Answer: violet square moving"),
            generation("c", "direct", "I cannot tell."),
        ],
        sources,
        TASK,
    )
    rationalized = verify_generations(
        [
            generation("b", "rationalized", "The square is blue.\nAnswer: blue square moving"),
            generation("c", "rationalized", "Answer: yellow square moving"),
        ],
        sources,
        TASK,
    )
    stats = assemble_cycle(sources, direct, rationalized, TASK, cycle=2, output_dir=tmp_path)
    assert stats["generated"] == 3
    assert (stats["accepted_direct"], stats["accepted_rationalized"], stats["rejected"]) == (1, 1, 3)
    assert stats["yield"] == 2 / 3
    # The counts add up: per pass, accepted + rejected = asked; clips without an answer are counted once.
    assert stats["hinted"] == 2 and (stats["rejected_direct"], stats["rejected_hinted"]) == (2, 1)
    assert stats["accepted_direct"] + stats["rejected_direct"] == stats["generated"]
    assert stats["accepted_rationalized"] + stats["rejected_hinted"] == stats["hinted"]
    assert stats["clips_without_accepted_answer"] == 1
    assert stats["rejected_by_reason"] == {
        "direct/label:mismatch": 1,
        "direct/label:hedged": 1,
        "rationalized/label:mismatch": 1,
    }

    write_instruction_card(tmp_path, stats=stats, config=CycleConfig(source_dataset="src"), history=[])
    accepted = load_dataset(str(tmp_path), split="train")
    rejected = load_dataset(str(tmp_path), "rejected", split="train")
    assert sorted(accepted["id"]) == ["a", "b"]
    by_id = {row["id"]: row for row in accepted}
    assert by_id["b"]["rationalized"] and not by_id["a"]["rationalized"]
    # The training prompt is the direct prompt: the hint never reaches the training data.
    user_text = by_id["b"]["messages"][0]["content"][1]["text"]
    assert user_text == TASK.direct_prompt("What moves?")
    assert by_id["b"]["messages"][1]["content"][0]["text"].endswith("blue square moving")
    assert by_id["a"]["cycle"] == 2 and by_id["a"]["start"] == 0.5 and by_id["a"]["generator"] == "tiny@0"
    assert json.loads(by_id["a"]["label"]) == {"label": "red square moving", "speed": 5.0}
    assert by_id["a"]["verification"]["fields"][0]["reason"] == "match"
    assert sorted(zip(rejected["id"], rejected["rationalized"])) == [("b", False), ("c", False), ("c", True)]
    card = (tmp_path / "README.md").read_text()
    assert "config_name: rejected" in card and "| 3 | 1 | 2 | 1 | 3 |" in card


def test_a_hinted_retry_of_a_passing_clip_is_not_duplicated(tmp_path):
    sources = {"a": source("a", "red square moving")}
    answer = "Answer: red square moving"
    direct = verify_generations([generation("a", "direct", answer)], sources, TASK)
    rationalized = verify_generations([generation("a", "rationalized", answer)], sources, TASK)
    stats = assemble_cycle(sources, direct, rationalized, TASK, cycle=1, output_dir=tmp_path)
    assert (stats["accepted"], stats["rejected"]) == (1, 0)


def test_several_answers_per_clip_keep_distinct_verified_ones_up_to_the_limit(tmp_path):
    sources = {"a": source("a", "red square moving"), "b": source("b", "blue square moving")}

    def samples(clip, answers):
        return [{**generation(clip, "direct", text), "sample": i} for i, text in enumerate(answers)]

    direct = verify_generations(
        samples("a", ["It is red.\nAnswer: red square moving", "It is  red.\nAnswer: red square moving",
                      "Red, clearly.\nAnswer: red square moving", "Crimson.\nAnswer: red square moving",
                      "Answer: green square moving", "Answer: green square moving"])
        + samples("b", ["Answer: pink square moving", "Answer: pink square moving", "Answer: grey square moving"]),
        sources,
        TASK,
    )  # fmt: skip
    hinted = verify_generations(
        [{**generation("b", "rationalized", "It is blue.\nAnswer: blue square moving"), "sample": 0},
         {**generation("a", "rationalized", "It is red.\nAnswer: red square moving"), "sample": 0}],
        sources,
        TASK,
    )  # fmt: skip
    stats = assemble_cycle(sources, direct, hinted, TASK, 1, tmp_path, max_accepted_per_clip=2)
    accepted = load_split(tmp_path, "train").to_list()
    rejected = load_split(tmp_path, "train", "rejected").to_list()
    kept_a = [r["answer"] for r in accepted if r["id"] == "a"]
    # Whitespace-only variants are one answer; the limit keeps the first two distinct ones.
    assert kept_a == ["It is red.\nAnswer: red square moving", "Red, clearly.\nAnswer: red square moving"]
    assert [r["answer"] for r in rejected if r["id"] == "a"] == ["Answer: green square moving"]
    # b had no passing direct answer: its hinted retry counts; a's does not.
    assert [(r["id"], r["rationalized"]) for r in accepted if r["id"] == "b"] == [("b", True)]
    assert sorted(r["answer"] for r in rejected if r["id"] == "b") == ["Answer: grey square moving",
                                                                       "Answer: pink square moving"]  # fmt: skip
    assert stats["generated"] == 2 and stats["answers_direct"] == 9 and stats["hinted"] == 1
    assert stats["duplicate_answers"] == 3 and stats["accepted_over_limit"] == 1
    assert stats["clips_with_accepted_answer"] == 2 and stats["yield"] == 1.0 and stats["direct_yield"] == 0.5
