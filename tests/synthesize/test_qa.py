"""`vstar qa`: parsing raw teacher outputs (garbage included), the filters and their counts, balanced option letters,
an instruction dataset that `vstar train` trains on and whose choice rows the multiple-choice task verifies and
evaluates, and clear errors for bad input.

Run: `python -m pytest tests/synthesize/test_qa.py -q`
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from datasets import Features, Value, Video, load_dataset

from vstar.generate.base import GenerationBackend, GenerationSettings, RequestFailed
from vstar.synthesize import QAConfig, generate_qa
from vstar.synthesize.captions import caption_features
from vstar.synthesize.qa_parse import (
    ANSWER_NOT_AN_OPTION,
    BAD_OPTIONS,
    DUPLICATE_OPTIONS,
    EMPTY_ANSWER,
    EMPTY_OUTPUT,
    MALFORMED,
    REPEATED_TYPE,
    UNKNOWN_TYPE,
    UNSPECIFIED,
    load_question_types,
    near_duplicates,
    parse_output,
)
from vstar.video import write_video

TYPES = load_question_types()
# `vstar caption`'s columns, then the source's label columns.
CAPTION_FEATURES = caption_features({"source": Value("string"), "label": Value("string")})


def test_sixteen_types_with_examples():
    assert [t.name for t in TYPES] == [
        "temporal",
        "spatial",
        "causal",
        "description-scene",
        "description-human",
        "description-object",
        "count",
        "binary",
        "fine-grained action",
        "plot",
        "non-existent actions with existent scene",
        "time order",
        "object direction",
        "camera direction",
        "speed",
        "attribute change",
    ]
    for t in TYPES:
        example = t.example
        assert example["answer"] in example["options"] and len(set(example["options"])) == 4


OPEN_CASES = [
    # (raw output, types kept, reasons of the problems)
    ('[{"Dimension": "count", "Question": "How many cats?", "Answer": "Two cats."}]', ["count"], []),
    (
        'Sure! Here are the pairs:\n```json\n[{"dimension": "Description-Scene", "question": "Where is it?", '
        '"answer": "In a kitchen."}, {"Dimension": "fine grained action", "Question": "How does she stir?", '
        '"Answer": "Slowly, with a wooden spoon."}]\n```\nHope this helps.',
        ["description-scene", "fine-grained action"],
        [],
    ),
    ('{"Dimension": "plot", "Question": "What is it about?", "Answer": "A race."}', ["plot"], []),
    ('{"qa": [{"Dimension": "speed", "Question": "How fast?", "Answer": "Very fast."}]}', ["speed"], []),
    (
        '[{"Dimension": "count", "Question": "How many?", "Answer": "Three."},'
        ' {"Dimension": "Count", "Question": "How many dogs?", "Answer": "One."},'
        ' {"Dimension": "weather", "Question": "Is it sunny?", "Answer": "Yes."},'
        ' {"Dimension": "temporal", "Question": "When?", "Answer": "The description does not specify when."},'
        ' {"Dimension": "spatial", "Question": "", "Answer": "Left."},'
        ' "not an object", {"Dimension": "causal", "Answer": "no question"}]',
        ["count"],
        [REPEATED_TYPE, UNKNOWN_TYPE, UNSPECIFIED, EMPTY_ANSWER, MALFORMED, MALFORMED],
    ),
    ("I cannot help with that.", [], [MALFORMED]),
    ('[{"Dimension": "count", "Question": "How many?", "Answer": "Thr', [], [MALFORMED]),
    ("", [], [EMPTY_OUTPUT]),
    ("   \n", [], [EMPTY_OUTPUT]),
    ("\x00\x01 garbage ]]]} {{{", [], [MALFORMED]),
]


@pytest.mark.parametrize(("raw", "kept", "reasons"), OPEN_CASES)
def test_parse_open_outputs_written_by_hand(raw, kept, reasons):
    items, problems = parse_output(raw, "open", TYPES)
    assert [i.question_type for i in items] == kept
    assert [p.reason for p in problems] == reasons
    assert all(p.detail for p in problems)


def _choice(options, answer, dimension="count", question="How many cats are there?"):
    return json.dumps([{"Dimension": dimension, "Question": question, "Options": options, "Answer": answer}])


CHOICE_CASES = [
    (_choice(["Two", "One", "Three", "Five"], "Two"), None),
    # Labelled options (and a labelled answer) read as their text.
    (_choice(["A. Two", "B. One", "C. Three", "D. Five"], "A. Two"), None),
    (_choice(["Two", "One", "Three", "Five"], "two cats"), ANSWER_NOT_AN_OPTION),
    (_choice(["Two", "One", "Three", "Five"], "B"), ANSWER_NOT_AN_OPTION),
    (_choice(["Two", "One", "Three"], "Two"), BAD_OPTIONS),
    (_choice(["Two", "One", "Three", ""], "Two"), BAD_OPTIONS),
    (_choice("Two, One, Three, Five", "Two"), BAD_OPTIONS),
    (_choice(["Two", "One", "two!", "Five"], "Two"), DUPLICATE_OPTIONS),
    (_choice(["Not shown", "One", "Three", "Five"], "The video does not show it."), UNSPECIFIED),
]


@pytest.mark.parametrize(("raw", "reason"), CHOICE_CASES)
def test_parse_choice_outputs_written_by_hand(raw, reason):
    items, problems = parse_output(raw, "multiple_choice", TYPES)
    if reason is None:
        assert len(items) == 1 and not problems
        assert items[0].options == ["Two", "One", "Three", "Five"] and items[0].answer == "Two"
    else:
        assert not items and [p.reason for p in problems] == [reason]


def test_near_duplicates_keep_the_first_question():
    questions = ["What colour is the car?", "What color is the car?", "What colour is the bike?", "what colour is car"]
    assert near_duplicates(questions, 95) == {1: 0}
    assert near_duplicates(questions, 90) == {1: 0, 3: 0}  # "the bike" is another question (ratio 84)


# --- the whole command on a caption dataset, with hand-written teacher outputs ---------------------------------


def _item(t, **extra):
    return {"Dimension": t.name, "Question": t.example["question"], "Answer": t.example["answer"], **extra}


def scripted_output(prompt: str) -> str:
    """A teacher's raw output for a prompt, chosen by the video the description is about (written by hand)."""
    choice = "Options" in prompt.split("Description of the video:")[0] or '"Options"' in prompt
    if "EMPTY" in prompt:
        return ""
    if "GARBAGE" in prompt:
        return "Here you go: {Dimension: count, Question: how many} ]"
    if "FENCED" in prompt:
        items = [_item(t, Options=t.example["options"]) if choice else _item(t) for t in TYPES[:8]]
        # Two questions of other types that nearly repeat earlier ones, one unspecified answer.
        repeat = dict(items[0], Dimension=TYPES[8].name, Question=items[0]["Question"].replace("right", "just"))
        vague = dict(items[1], Dimension=TYPES[9].name, Answer="The description does not mention it.")
        if choice:
            vague["Options"] = [vague["Answer"], "a", "b", "c"]
        text = json.dumps([*items, repeat, vague], ensure_ascii=False)
        return f"```json\n{text}\n```"
    items = [_item(t, Options=t.example["options"]) if choice else _item(t) for t in TYPES]
    if choice:
        items[3]["Answer"] = "something else"  # not one of its options
        items[4]["Options"] = items[4]["Options"][:3]
    return json.dumps(items, ensure_ascii=False)


class ScriptedTeacher(GenerationBackend):
    """Answers with the hand-written outputs above (the outputs of a real model are parsed in the slow test)."""

    generator = "scripted-teacher"
    model_name = "scripted-teacher"

    def __init__(self):
        self.prompts: list[str] = []

    def generate_prepared(self, prepared):
        self.prompts += [r.prompt for r in prepared]
        assert all(r.video is None for r in prepared)  # text only: the description is the input
        return [
            RequestFailed("server_error", "HTTP 503 after 5 retries", 503)
            if "FAILS" in r.prompt
            else scripted_output(r.prompt)
            for r in prepared
        ]


def write_captions(root: Path, descriptions: dict[str, str], teachers=("teacher-a@abc",)) -> Path:
    from vstar.io import split_file, write_parquet

    rng = np.random.default_rng(0)
    rows = []
    for clip, description in descriptions.items():
        video = write_video(root / "videos" / f"{clip}.mp4", rng.integers(0, 255, (8, 32, 32, 3), np.uint8), fps=4)
        for teacher in teachers:
            rows.append(
                {
                    "id": clip,
                    "video": {"path": str(video), "bytes": None},
                    "start": 0.0,
                    "end": 2.0,
                    "teacher": teacher,
                    "clip_descriptions": [{"start": 0.0, "end": 2.0, "text": description}],
                    "summaries": [],
                    "description": description,
                    "source": "shapes",
                    "label": "red square",
                }
            )
    write_parquet(root / "captions" / split_file("train"), rows, CAPTION_FEATURES)
    return root / "captions"


@pytest.fixture(scope="module")
def qa_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("qa")
    captions = write_captions(
        root,
        {
            "clip-full": "A red square moves left over a dark background, then turns blue.",
            "clip-fenced": "FENCED A small circle bounces; naïve ünïcode “quotes”.",
            "clip-garbage": "GARBAGE a clip the teacher cannot handle.",
            "clip-empty": "EMPTY a clip the teacher answers nothing for.",
            "clip-none": "",
            "clip-fails": "FAILS a clip whose request the teacher server refuses.",
        },
        teachers=("teacher-a@abc", "teacher-b@def"),
    )
    teacher = ScriptedTeacher()
    config = QAConfig(captions=str(captions), model="scripted-teacher", output=str(root / "qa"), shuffle_seed=3)
    report = generate_qa(config, GenerationSettings(batch_size=4, chunk_size=4, max_new_tokens=2048), teacher)
    return root, config, report, teacher


def reasons_of(rows, reason: str) -> set[str]:
    return {r["clip_id"] for r in rows if r["verification"]["reason"] == reason}


def test_dataset_report_and_rejected_reasons(qa_run):
    root, config, report, teacher = qa_run
    output = Path(config.output)
    accepted = load_dataset(str(output), split="train")
    rejected = load_dataset(str(output), "rejected", split="train")
    saved = json.loads((output / "qa_report.json").read_text())
    assert saved == json.loads(json.dumps(report))
    # Two teachers' descriptions of 6 clips, 2 formats each; the empty description is never asked.
    assert len(teacher.prompts) == 2 * 5 * 2 and report["requests"] == 20
    # A failed request is reported on its row by the generation layer: rejected with what happened.
    assert reasons_of(rejected, "teacher_failure") == {"clip-fails"}
    failure = next(r for r in rejected if r["verification"]["reason"] == "teacher_failure")
    assert failure["verification"]["fields"][0]["detail"] == "server_error (HTTP 503): HTTP 503 after 5 retries"
    reasons = report["rejected_by_reason"]
    assert reasons["empty_description"] == 2 * 2  # both teachers, both formats
    assert reasons["malformed"] == 2 * 2 and reasons["empty_output"] == 2 * 2
    assert reasons["teacher_failure"] == 2 * 2
    assert reasons["unspecified"] == 2 * 2
    # One video's questions are asked once: teacher-b described the clips as teacher-a did, so each of its items
    # nearly repeats one of teacher-a's (16 + 14 + 9 + 9), and the repeats within teacher-a's own output (2).
    assert reasons["near_duplicate"] == 16 + 14 + 9 + 9 + 2
    assert reasons["answer_not_an_option"] == 2 and reasons["bad_options"] == 2
    assert sum(reasons.values()) == report["rejected"] == len(rejected)
    assert Counter(rejected["verification"][i]["reason"] for i in range(len(rejected))) == +Counter(reasons)
    # clip-full: 16 open + 14 choice; clip-fenced: 8 + 8 (all of teacher-a).
    assert report["accepted_by_format"] == {"open": 16 + 8, "multiple_choice": 14 + 8}
    assert len(accepted) == report["accepted"] == 46
    assert len(set(accepted["id"])) == len(accepted)
    # At most one item per type, per description and format.
    per = Counter(zip(accepted["clip_id"], accepted["teacher"], accepted["format"], accepted["question_type"]))
    assert max(per.values()) == 1
    # The malformed output is kept whole in its rejected row.
    garbage = [r for r in rejected if r["verification"]["reason"] == "malformed"]
    assert garbage[0]["answer"].startswith("Here you go")
    assert set(accepted["teacher"]) == {"teacher-a@abc"}
    assert {r["teacher"] for r in rejected if r["verification"]["reason"] == "near_duplicate"} == {
        "teacher-a@abc",
        "teacher-b@def",
    }
    assert set(accepted["generator"]) == {"scripted-teacher"}
    assert "ü" in "".join(accepted["answer"]) or "ü" in "".join(teacher.prompts)


def test_choice_letters_are_balanced_and_options_distinct(qa_run):
    _, config, report, _ = qa_run
    rows = [r for r in load_dataset(config.output, split="train") if r["format"] == "multiple_choice"]
    letters = Counter(r["answer"].rstrip(".") for r in rows)
    assert set(letters) == set("ABCD") and max(letters.values()) - min(letters.values()) <= 1
    assert report["correct_letters"] == dict(letters)
    for row in rows:
        assert len(row["options"]) == 4 and len({o.lower() for o in row["options"]}) == 4
        user = row["messages"][0]["content"][1]["text"]
        assert user.startswith(row["question"] + "\nA. ")
        assert user.endswith("Please respond with only the letter of the correct answer.")
        assert row["messages"][1]["content"][0]["text"] == row["answer"]
    # The option order does not follow the teacher's (the teacher always put the answer first).
    assert Counter(r["options"].index(json.loads(r["label"])["options"]["A"]) for r in rows)[0] == len(rows)


def test_rerun_asks_nothing_again_and_gives_the_same_rows(qa_run):
    root, config, report, _ = qa_run
    before = load_dataset(config.output, split="train").to_list()
    teacher = ScriptedTeacher()
    again = generate_qa(config, GenerationSettings(batch_size=4, chunk_size=4, max_new_tokens=2048), teacher)
    # Every answer was on disk: only the failed requests are asked again (and fail again).
    assert len(teacher.prompts) == 4 and all("FAILS" in p for p in teacher.prompts)
    assert again == report
    assert load_dataset(config.output, split="train").to_list() == before


def test_choice_rows_are_rows_of_the_multiple_choice_task(qa_run):
    from vstar.tasks import get_task

    _, config, _, _ = qa_run
    task = get_task("multiple_choice")
    rows = [r for r in load_dataset(config.output, split="train") if r["format"] == "multiple_choice"]
    for row in rows:
        label = task.label(row)
        assert label["options"] == dict(zip("ABCD", row["options"]))
        assert task.verify(row["answer"], label).passed
        wrong = next(k for k in "ABCD" if k != label["answer"])
        assert not task.verify(f"{wrong}.", label).passed
    assert {json.loads(r["label"])["answer"] for r in rows} == set("ABCD")


def test_missing_description_column_is_one_line(tmp_path, capsys):
    from vstar.cli import main
    from vstar.io import split_file, write_parquet

    features = Features({"id": Value("string"), "video": Video(decode=False), "caption": Value("string")})
    row = {"id": "a", "video": {"path": "a.mp4", "bytes": None}, "caption": "A dog runs."}
    write_parquet(tmp_path / "caps" / split_file("train"), [row], features)
    with pytest.raises(SystemExit) as stop:
        main(["qa", "--captions", str(tmp_path / "caps"), "--model", "m", "--output", str(tmp_path / "qa")])
    assert stop.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("vstar")]
    assert len(lines) == 1
    assert "no column 'description'" in lines[0] and "--description_column" in lines[0]
    # Naming the column is the fix: the command then gets as far as the model.
    with pytest.raises(SystemExit) as stop:
        main(
            [
                "qa",
                "--captions",
                str(tmp_path / "caps"),
                "--description_column",
                "caption",
                "--model",
                str(tmp_path / "no-such-model"),
                "--output",
                str(tmp_path / "qa"),
            ]
        )
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("vstar")]
    assert len(lines) == 1 and "model folder" in lines[0] and "no-such-model" in lines[0]


def test_train_on_qa_rows_and_evaluate_choice_rows(qa_run, tiny_model_dirs, tmp_path):
    """`vstar train`'s trainer runs on the QA dataset; its choice rows are evaluated by the multiple-choice task."""
    import math

    from vstar.evaluate.run import evaluate_model
    from vstar.generate.base import get_backend
    from vstar.tasks import get_task
    from vstar.train.sft import VStarSFTConfig, train

    _, config, _, _ = qa_run
    model = tiny_model_dirs["qwen2_5_vl"]
    summary = train(
        VStarSFTConfig(
            model_name_or_path=str(model),
            output_dir=str(tmp_path / "model"),
            dataset=config.output,
            finetuning="lora",
            max_steps=3,
            per_device_train_batch_size=4,
            learning_rate=2e-3,
            num_frames=8,
            activation_checkpointing=False,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
        )
    )
    assert summary["global_step"] == 3 and math.isfinite(summary["train_loss"]) and summary["num_rows"] == 46
    assert (tmp_path / "model" / "adapter_model.safetensors").is_file()

    rows = [r for r in load_dataset(config.output, split="train") if r["format"] == "multiple_choice"][:8]
    settings = GenerationSettings(batch_size=8, max_new_tokens=6, num_frames=8)
    backend = get_backend(settings, str(model), str(tmp_path / "model"))
    results = evaluate_model(backend, rows, get_task("multiple_choice"), tmp_path / "eval", settings)
    metrics = results["metrics"]
    assert metrics["num_examples"] == 8 and metrics["skipped"] == 0
    assert 0 <= metrics["accuracy"] <= 1 and "choice_distribution" in metrics
    assert {p["label"]["answer"] for p in results["predictions"]} <= set("ABCD")
    assert all(p["label"]["options"] == dict(zip("ABCD", r["options"])) for p, r in zip(results["predictions"], rows))


def test_recipe_and_flags(tmp_path):
    from vstar.configs import parse_configs

    recipe = tmp_path / "qa.yaml"
    recipe.write_text(
        "captions: data/captions\nmodel: Qwen/Qwen2.5-7B-Instruct\noutput: data/qa\nformats: [multiple_choice]\n"
        "choice_answer: full\nmax_new_tokens: 2048\nbackend: vllm\n"
        # keys of other commands in one shared recipe are skipped
        "learning_rate: 0.0002\nnum_cycles: 3\n"
    )
    config, settings = parse_configs((QAConfig, GenerationSettings), ["--config", str(recipe), "--shuffle_seed", "7"])
    assert (config.formats, config.choice_answer, config.shuffle_seed) == (["multiple_choice"], "full", 7)
    assert (settings.max_new_tokens, settings.backend) == (2048, "vllm")
    from vstar.errors import ConfigError

    with pytest.raises(ConfigError, match="--formats"):
        generate_qa(QAConfig(captions="c", model="m", formats=["essay"]))
    with pytest.raises(ConfigError, match="choice_answer"):
        generate_qa(QAConfig(captions="c", model="m", choice_answer="word"))
    with pytest.raises(ConfigError, match=r"lacks \{description\}"):
        generate_qa(QAConfig(captions="c", model="m", open_prompt="Write questions about {types}."))


def test_full_option_answers_and_teacher_failures():
    """Generation rows as the generation layer writes them: a failed request carries its error on its row."""
    from vstar.synthesize.qa import assemble_qa
    from vstar.tasks import get_task

    rows = [
        {"id": c, "video": {"path": f"{c}.mp4", "bytes": None}, "description": "A red square.", "teacher": "t"}
        for c in ("ok", "failed", "blank")
    ]
    good = json.dumps([_item(t, Options=t.example["options"]) for t in TYPES[:4]])
    generations = [
        {"id": "ok", "attempt": "multiple_choice", "answer": good, "generator": "llm"},
        {"id": "failed", "attempt": "multiple_choice", "answer": "", "error": "HTTP 503 after 5 retries"},
        {"id": "blank", "attempt": "multiple_choice", "answer": "  "},
    ]
    config = QAConfig(captions="c", model="m", formats=["multiple_choice"], choice_answer="full")
    accepted, rejected, report = assemble_qa(rows, ["ok", "failed", "blank"], generations, config, TYPES)
    assert report["rejected_by_reason"]["teacher_failure"] == 1 and report["rejected_by_reason"]["empty_output"] == 1
    failure = next(r for r in rejected if r["verification"]["reason"] == "teacher_failure")
    assert failure["clip_id"] == "failed" and "HTTP 503" in failure["verification"]["fields"][0]["detail"]
    task = get_task("multiple_choice")
    assert len(accepted) == 4 and sorted(r["answer"][0] for r in accepted) == list("ABCD")
    for row in accepted:
        letter = row["answer"][0]
        assert row["answer"] == f"{letter}. {row['options']['ABCD'.index(letter)]}"
        assert task.verify(row["answer"], task.label(row)).passed
        assert row["messages"][0]["content"][1]["text"].endswith("followed by the full option.")


@pytest.mark.slow
def test_real_model_output_through_the_cli(format_teacher, tmp_path, capsys):
    """`vstar qa` with a real (tiny, format-trained) text model on the transformers backend: what the model writes
    is parsed, filtered and counted, whatever it is."""
    from vstar.cli import main
    from vstar.synthesize.qa_parse import REASONS
    from vstar.testing.teachers import VIDEO_ANSWER

    captions = write_captions(
        tmp_path,
        {"clip-1": VIDEO_ANSWER, "clip-2": VIDEO_ANSWER.replace("red", "blue")},
        teachers=("teacher-a@abc", "teacher-b@def"),
    )
    recipe = tmp_path / "qa.yaml"
    recipe.write_text(f"captions: {captions}\nmodel: {format_teacher}\nmax_new_tokens: 160\nbatch_size: 4\n")
    main(["qa", "--config", str(recipe), "--output", str(tmp_path / "qa")])
    report = json.loads((tmp_path / "qa" / "qa_report.json").read_text())
    accepted = load_dataset(str(tmp_path / "qa"), split="train")
    rejected = load_dataset(str(tmp_path / "qa"), "rejected", split="train")
    assert report["requests"] == 8 and report["unanswered_requests"] == 0
    assert set(report["rejected_by_reason"]) == set(REASONS)
    assert report["accepted"] == len(accepted) and report["rejected"] == len(rejected)
    assert sum(report["rejected_by_reason"].values()) == len(rejected)
    # The model learnt the open format: its items parse, one per type, from each clip's first description; the
    # second teacher's description of the same clip gives the same questions, which are near-duplicates.
    open_rows = [r for r in accepted if r["format"] == "open"]
    assert open_rows and {r["teacher"] for r in open_rows} == {"teacher-a@abc"}
    assert report["rejected_by_reason"]["near_duplicate"] >= len(open_rows)
    assert all(r["generator"].startswith(str(format_teacher)) for r in accepted)
    assert all(r["verification"]["reason"] in REASONS for r in rejected)
    (tmp_path / "qa_report_real_model.json").write_text(json.dumps(report, indent=2))


def test_qa_dataset_exports_to_llava_and_back(qa_run, tmp_path):
    from vstar.export import export_llava
    from vstar.sources.llava import LlavaConfig, build_llava

    _, config, _, _ = qa_run
    summary = export_llava(config.output, tmp_path / "qa.json", video_root=tmp_path / "videos")
    records = json.loads((tmp_path / "qa.json").read_text())
    assert summary["records"] == len(records) == 46 and summary["skipped"] == []
    choice = next(r for r in records if r["id"].endswith("/multiple_choice/count"))
    assert choice["conversations"][0]["value"].startswith("<image>\nHow many times")
    assert choice["conversations"][0]["value"].endswith("Please respond with only the letter of the correct answer.")
    assert choice["data_source"] == "shapes"
    back = build_llava(
        LlavaConfig(
            annotations=[str(tmp_path / "qa.json")], videos=str(tmp_path / "videos"), output=str(tmp_path / "b")
        )
    )
    rebuilt = {r["id"]: r for r in load_dataset(str(back), split="train")}
    for row in load_dataset(config.output, split="train"):
        again = rebuilt[row["id"]]
        assert again["messages"] == row["messages"]
        assert (again["format"], again["options"], again["answer"]) == (row["format"], row["options"], row["answer"])
    # The rejected config exports what has a conversation; a malformed output's row has none and is listed.
    rejected = export_llava(config.output, tmp_path / "rejected.json", dataset_config="rejected")
    assert any(s["reason"].startswith("no conversation") for s in rejected["skipped"])


@pytest.mark.slow
def test_caption_then_qa_then_llava(format_teacher, tmp_path):
    """The synthesis path from the command line: `vstar caption` output is `vstar qa` input, whose dataset
    exports to LLaVA JSON and builds back."""
    from vstar.cli import main
    from vstar.sources.shapes import ShapesConfig, build_shapes

    source = build_shapes(ShapesConfig(output=str(tmp_path / "shapes"), num_train=4, num_validation=0, num_test=0))
    teacher = str(format_teacher)
    main(["caption", "--dataset", str(source), "--teacher", teacher, "--output", str(tmp_path / "captions")])
    main(["qa", "--captions", str(tmp_path / "captions"), "--model", teacher, "--output", str(tmp_path / "qa")])
    report = json.loads((tmp_path / "qa" / "qa_report.json").read_text())
    assert report["caption_rows"] == 4 and report["requests"] == 8
    accepted = load_dataset(str(tmp_path / "qa"), split="train")
    assert len(accepted) == report["accepted"] > 0
    assert set(accepted["clip_id"]) <= set(load_dataset(str(source), split="train")["id"])
    main(["export", "--format", "llava", str(tmp_path / "qa"), str(tmp_path / "qa.json")])
    main(["build", "llava", "--annotations", str(tmp_path / "qa.json"), "--videos", str(tmp_path / "videos")]
         + ["--output", str(tmp_path / "back")])  # fmt: skip
    back = {r["id"]: r["messages"] for r in load_dataset(str(tmp_path / "back"), split="train")}
    assert back == {r["id"]: r["messages"] for r in accepted}


class _TeacherServer(ThreadingHTTPServer):
    """Chat completions on the loopback that refuse (400) or fail (500) by the description, else answer with
    hand-written QA JSON: the failures a teacher API gives, through the real endpoint backend."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _TeacherHandler)
        self.parts: list[list[str]] = []


class _TeacherHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        content = body["messages"][-1]["content"]
        parts = [content] if isinstance(content, str) else [p for p in content]
        self.server.parts.append([p if isinstance(p, str) else p["type"] for p in parts])
        prompt = parts[-1] if isinstance(parts[-1], str) else parts[-1]["text"]
        if "REFUSED" in prompt:
            status, payload = 400, {"error": "this request is not allowed"}
        elif "BROKEN" in prompt:
            status, payload = 500, {"error": "internal error"}
        else:
            text = scripted_output(prompt)
            status, payload = 200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_endpoint_teacher_failures_are_rejected_on_their_rows(tmp_path):
    server = _TeacherServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        captions = write_captions(
            tmp_path,
            {"ok": "A red square moves left.", "refused": "REFUSED clip.", "broken": "BROKEN clip."},
        )
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        settings = GenerationSettings(backend="endpoint", endpoint_url=url, max_retries=0, max_new_tokens=2048)
        config = QAConfig(captions=str(captions), model="teacher-llm", output=str(tmp_path / "qa"))
        report = generate_qa(config, settings)
    finally:
        server.shutdown()
        server.server_close()
    assert all(parts == ["text"] for parts in server.parts)  # text only: no image was sent
    assert report["rejected_by_reason"]["teacher_failure"] == 2 * 2
    rejected = load_dataset(str(tmp_path / "qa"), "rejected", split="train")
    details = {
        r["clip_id"]: r["verification"]["fields"][0]["detail"]
        for r in rejected
        if r["verification"]["reason"] == "teacher_failure"
    }
    assert details["refused"].startswith("client_error (HTTP 400)")
    assert details["broken"].startswith("server_error (HTTP 500)")
    assert report["accepted_by_format"] == {"open": 16, "multiple_choice": 14}
