"""Tasks: registry, prompts, question pools, label texts, verification and scoring.

Run: `PYTHONPATH=src python -m pytest tests/tasks/test_tasks.py -q`
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from vstar.tasks import TASKS, Task, get_task
from vstar.verify.base import Verdict

K700 = Path(__file__).resolve().parents[3] / "shared" / "data" / "kinetics" / "k700_labels.txt"
DIVE = {
    "action_type": "407c",
    "difficulty": 3.2,
    "dive_score": 65.6,
    "sub_actions": ["Inward", "3.5 Soms.Tuck", "Entry"],
}


def test_builtin_tasks_are_registered():
    assert {"action_recognition", "action_quality"} <= set(TASKS.names())
    assert isinstance(get_task("action_recognition"), Task)


def test_unknown_task_lists_known_names():
    with pytest.raises(KeyError) as err:
        get_task("no_such_task")
    message = str(err.value)
    assert "no_such_task" in message and "action_recognition" in message and "action_quality" in message


@pytest.mark.parametrize(("name", "minimum"), [("action_recognition", 20), ("action_quality", 10)])
def test_question_pools(name, minimum):
    questions = get_task(name).questions
    assert len(questions) >= minimum
    assert len(set(questions)) == len(questions)
    assert all(q.endswith(("?", ".")) and not q.startswith("#") for q in questions)


def test_question_appends_answer_format_and_is_deterministic():
    task = get_task("action_recognition")
    q1 = task.question(rng=random.Random(3))
    assert q1 == task.question(rng=random.Random(3))
    assert q1.startswith(tuple(task.questions))
    assert q1.endswith(task.prompts.answer_format)
    assert "Answer:" in task.prompts.answer_format


def test_action_quality_answer_format_asks_for_all_fields():
    fmt = get_task("action_quality").prompts.answer_format
    assert all(word in fmt for word in ("action sequence", "difficulty", "final score", "Answer:"))


def test_prompts_are_overridable(tmp_path):
    task = get_task("action_recognition", prompts={"questions": ["What happens?"], "answer_format": "Be brief."})
    assert task.question(rng=random.Random(0)) == "What happens? Be brief."
    pool = tmp_path / "pool.txt"
    pool.write_text("Q one?\nQ two?\n", encoding="utf-8")
    task = get_task("action_quality", prompts={"questions": str(pool), "direct": "Q: {question}"})
    assert task.questions == ["Q one?", "Q two?"]
    assert task.direct_prompt("Q one?") == "Q: Q one?"
    with pytest.raises(KeyError):
        get_task("action_recognition", prompts={"no_such_prompt": "x"})


def test_missing_prompt_file_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "my_questions.txt"
    with pytest.raises(FileNotFoundError, match="my_questions.txt"):
        get_task("action_recognition", prompts={"questions": str(missing)})
    with pytest.raises(FileNotFoundError, match="direct_prompt.txt"):
        get_task("action_recognition", prompts={"direct": "prompts/direct_prompt.txt"})


def test_question_files_skip_comment_lines(tmp_path):
    pool = tmp_path / "pool.txt"
    pool.write_text("# Questions for my clips\nWhat happens?\n  # indented comment\n\nWho moves?\n", encoding="utf-8")
    questions = get_task("action_recognition", prompts={"questions": str(pool)}).questions
    assert questions == ["What happens?", "Who moves?"]
    inline = get_task("action_recognition", prompts={"questions": "# from the recipe\nWhat happens?\nWho moves?"})
    assert inline.questions == ["What happens?", "Who moves?"]
    pool.write_text("# only a comment\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no questions"):
        get_task("action_recognition", prompts={"questions": str(pool)})


@pytest.mark.parametrize(
    ("key", "template", "message"),
    [
        ("direct", "Explain the video step by step.", "lacks {question}"),
        ("rationalization", "Question: {question}\nExplain.", "lacks {hint}"),
        ("rationalization", "Question: {question}\nAnswer: {hnt}.", "unknown {hnt}"),
        ("direct", "Question: {question", "not a valid template"),
    ],
)
def test_templates_are_checked_for_their_fields(tmp_path, key, template, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        get_task("action_recognition", prompts={key: template})
    path = tmp_path / f"{key}.txt"
    path.write_text(template, encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(str(path))):
        get_task("action_recognition", prompts={key: str(path)})


def test_direct_and_rationalization_prompts_follow_the_paper():
    task = get_task("action_quality")
    assert task.direct_prompt("What dive?") == (
        "Question: What dive?\nCan you explain step-by-step how one can arrive at this conclusion?"
    )
    assert task.rationalization_prompt("What dive?", DIVE) == (
        "Question: What dive?\nAnswer: action sequence: Inward, 3.5 Soms.Tuck, Entry. action difficulty: 3.2. "
        "final score: 65.6.\nCan you explain step-by-step how one can arrive at this conclusion?"
    )


def test_label_texts():
    assert (
        get_task("action_recognition").label_text({"label": "petting animal (not cat)"}) == "petting animal (not cat)"
    )
    aq = get_task("action_quality")
    assert (
        aq.label_text(DIVE)
        == "action sequence: Inward, 3.5 Soms.Tuck, Entry. action difficulty: 3.2. final score: 65.6"
    )
    assert aq.label_text({**DIVE, "dive_score": 88.0}).endswith("final score: 88")


def test_label_text_is_accepted_by_its_own_verifier():
    aq = get_task("action_quality")
    assert aq.verify("Reasoning.\nAnswer: " + aq.label_text(DIVE), DIVE).passed
    ar = get_task("action_recognition", classes=["abseiling", "rock climbing"])
    assert ar.verify("Answer: " + ar.label_text({"label": "abseiling"}), {"label": "abseiling"}).passed


def test_missing_label_columns_are_explained():
    with pytest.raises(KeyError, match="dive_score"):
        get_task("action_quality").label({"action_type": "407c", "difficulty": 3.2, "sub_actions": []})


def test_action_recognition_verdict_and_score():
    task = get_task("action_recognition", classes=["playing guitar", "playing bass guitar", "abseiling"])
    verdict = task.verify("Four thick strings.\nAnswer: playing bass guitar", {"label": "playing guitar"})
    assert isinstance(verdict, Verdict) and not verdict.passed
    field = verdict.fields["label"]
    assert (field.reason, field.expected, field.found) == ("near_miss", "playing guitar", "playing bass guitar")
    assert task.score("Answer: playing bass guitar", {"label": "playing guitar"}) == {"label": "playing bass guitar"}
    assert task.score("Answer: no idea", {"label": "playing guitar"}) == {"label": None}


def test_action_recognition_options():
    strict = get_task("action_recognition", classes=["abseiling"], default_aliases=False)
    assert not strict.verify("Answer: rappelling", {"label": "abseiling"}).passed
    custom = get_task("action_recognition", classes=["abseiling"], aliases={"abseiling": ["roping down"]})
    assert custom.verify("Answer: roping down", {"label": "abseiling"}).passed
    assert custom.verify("Answer: rappelling", {"label": "abseiling"}).passed


def test_action_quality_verdict_fields_and_score():
    task = get_task("action_quality")
    verdict = task.verify("Answer: inward 3.5 somersaults tuck, difficulty 3.2, final score 90", DIVE)
    assert set(verdict.fields) == {"sub_actions", "difficulty", "dive_score"}
    assert not verdict.passed and verdict.reason == "dive_score:out_of_tolerance"
    loose = get_task("action_quality", score_rel_tol=0.5)
    assert loose.verify("Answer: inward 3.5 somersaults tuck, difficulty 3.2, final score 90", DIVE).passed
    assert task.score("Answer: 407C, inward 3.5 somersaults tuck, difficulty 3.2, final score 65.6") == {
        "action_type": "407c",
        "difficulty": 3.2,
        "dive_score": 65.6,
        "sub_actions": ["Inward", "3.5 Soms.Tuck"],
    }


@pytest.fixture(scope="module")
def k700() -> list[str]:
    return [line.strip() for line in K700.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.skipif(not K700.exists(), reason="the Kinetics-700 class list is not available")
def test_every_k700_class_verifies_and_predicts_itself(k700):
    task = get_task("action_recognition", classes=k700)
    assert len(task.classes) == 700
    failures = []
    for name in k700:
        for answer in (f"Answer: {name}", f"Seen clearly.\nFinal answer: {name.upper()}", f"So the person is {name}."):
            verdict = task.verify(answer, {"label": name})
            if not verdict.passed or task.score(answer)["label"] != name:
                failures.append((answer, verdict.reason, task.score(answer)["label"]))
    assert not failures, failures[:20]


@pytest.mark.skipif(not K700.exists(), reason="the Kinetics-700 class list is not available")
def test_k700_near_misses_are_rejected(k700):
    # Every class whose words are all inside a longer class ("playing guitar" in "playing bass guitar").
    def words(name: str) -> set[str]:
        return set(re.sub(r"\(.*\)", "", name).split())

    pairs = [(a, b) for a in k700 for b in k700 if a != b and words(a) < words(b)]
    assert len(pairs) >= 10
    task = get_task("action_recognition", classes=k700)
    for short, long in pairs:
        verdict = task.verify(f"The clip is clear.\nAnswer: {long}", {"label": short})
        assert not verdict.passed, (short, long)
        assert task.verify(f"The clip is clear.\nAnswer: {long}", {"label": long}).passed, long


@pytest.mark.skipif(not K700.exists(), reason="the Kinetics-700 class list is not available")
def test_k700_qualifier_classes(k700):
    task = get_task("action_recognition", classes=k700)
    assert task.verify("Answer: petting a dog", {"label": "petting animal (not cat)"}).passed
    assert not task.verify("Answer: petting a cat", {"label": "petting animal (not cat)"}).passed
    assert task.verify("Answer: opening a bottle of beer", {"label": "opening bottle (not wine)"}).passed
    assert not task.verify("Answer: opening a bottle of wine", {"label": "opening bottle (not wine)"}).passed
    assert not task.verify("Answer: hugging a baby", {"label": "hugging (not baby)"}).passed


def test_load_task_reads_options_in_every_form():
    from vstar.tasks.base import load_task

    assert load_task("action_recognition", None).classes is None
    assert load_task("action_recognition", "").classes is None
    assert load_task("action_recognition", '{"classes": ["yoga"]}').classes == ["yoga"]
    assert load_task("action_recognition", {"classes": ["yoga"], "threshold": 80}).verifier.threshold == 80
    with pytest.raises(ValueError, match="not valid JSON"):
        load_task("action_recognition", "{classes: [yoga]}")
    with pytest.raises(ValueError, match="must be a mapping"):
        load_task("action_recognition", '["yoga"]')
    with pytest.raises(ValueError, match="no option 'clases'.*classes"):
        load_task("action_recognition", {"clases": ["yoga"]})


def _kinetics_source(shared_data: Path, root: Path, split: str = "validation") -> Path:
    """A source dataset of the Kinetics sample annotations with the 700 class names as its `ClassLabel`."""
    import csv

    from datasets import ClassLabel

    from vstar.io import split_file, write_parquet
    from vstar.schema import source_features

    names = [n.strip() for n in (shared_data / "kinetics" / "k700_labels.txt").read_text().splitlines() if n.strip()]
    with open(shared_data / "kinetics" / "kinetics_sample.csv", newline="") as f:
        records = list(csv.DictReader(f))
    features = source_features({"label": ClassLabel(names=names)})
    rows = [
        {"id": f"{r['youtube_id']}_{int(r['time_start']):06d}_{int(r['time_end']):06d}",
         "video": {"path": f"{r['youtube_id']}.mp4", "bytes": None}, "start": None, "end": None,
         "source": "kinetics700", "split": split, "label": r["label"]}
        for r in records
    ]  # fmt: skip
    write_parquet(root / split_file(split), rows, features)
    return root


def test_kinetics_vocabulary_comes_from_the_class_label(shared_data, tmp_path):
    from vstar.evaluate.run import score_answers
    from vstar.stages import StageData

    source = _kinetics_source(shared_data, tmp_path / "k700")
    rows, task = StageData(dataset=str(source), split="validation", task="action_recognition").load()
    assert len(task.classes) == 700 and len(rows) == 200
    # The example: without a setting, the near miss is rejected.
    verdict = task.verify("Four thick strings.\nAnswer: playing bass guitar", {"label": "playing guitar"})
    assert verdict.fields["label"].reason == "near_miss"
    # Without the vocabulary (before the class names were passed on) the same answer passed.
    assert get_task("action_recognition").verify("Answer: playing bass guitar", {"label": "playing guitar"}).passed

    def words(name: str) -> set[str]:
        return set(re.sub(r"\(.*\)", "", name).split())

    pairs = [(a, b) for a in task.classes for b in task.classes if a != b and words(a) < words(b)]
    free = get_task("action_recognition")
    rejected_free = sum(not free.verify(f"The clip is clear.\nAnswer: {b}", {"label": a}).passed for a, b in pairs)
    rejected = sum(not task.verify(f"The clip is clear.\nAnswer: {b}", {"label": a}).passed for a, b in pairs)
    assert (rejected_free, rejected, len(pairs)) == (2, 16, 16)
    # Predictions are classes of the vocabulary (or unparsed), so per-class metrics are over classes.
    labels = [r["label"] for r in rows[:6]]
    answers = {
        rows[0]["id"]: f"Answer: {labels[0].upper()}",
        rows[1]["id"]: f"So the person is {labels[1]}, clearly.",
        rows[2]["id"]: "Answer: playing bass guitar",
        rows[3]["id"]: "Answer: something with the hands",
        rows[4]["id"]: f"Answer: {labels[4]} or playing bass guitar",
        rows[5]["id"]: f"Answer: {labels[5]}",
    }
    results = score_answers(rows[:6], answers, task)
    predicted = [p["prediction"]["label"] for p in results["predictions"]]
    assert predicted == [labels[0], labels[1], "playing bass guitar", None, None, labels[5]]
    metrics = results["metrics"]
    assert set(metrics["per_class_accuracy"]) <= set(task.classes)
    assert all(c["prediction"] in task.classes for c in metrics["confusions"])
    assert metrics["unparsed_rate"] == pytest.approx(2 / 6)


def test_every_recipe_task_loads_without_a_class_list():
    import yaml

    from vstar.tasks.base import load_task

    recipes = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*/*/*.yaml"))
    with_tasks = [(path, yaml.safe_load(path.read_text())) for path in recipes]
    with_tasks = [(path, r) for path, r in with_tasks if isinstance(r, dict) and "task" in r]
    assert len(with_tasks) >= 6
    for path, recipe in with_tasks:
        task = load_task(recipe["task"], recipe.get("task_options"))
        assert "classes" not in (recipe.get("task_options") or {}), path  # the vocabulary comes from the source
        assert task.name == recipe["task"], path


def test_the_loop_takes_the_kinetics_vocabulary_from_the_train_split(shared_data, tmp_path):
    from loop_helpers import training_config

    from vstar.configs import CycleConfig
    from vstar.cycle import CycleRunner

    source = _kinetics_source(shared_data, tmp_path / "k700", split="train")
    config = CycleConfig(source_dataset=str(source), task="action_recognition", run_dir=str(tmp_path / "run"))
    runner = CycleRunner(config, training_config(output_dir=str(tmp_path / "unused")))
    assert len(runner.task.classes) == 700
    assert runner.task.verify("Answer: playing bass guitar", {"label": "playing guitar"}).reason == "label:near_miss"
