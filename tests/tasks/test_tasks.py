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
