"""Rewards from the task verifiers: accuracy with partial credit, format, length, the registry."""

import json

import pytest

from vstar.errors import UnknownNameError
from vstar.tasks.base import get_task
from vstar.train.rewards import REWARDS, build_rewards, describe_rewards, field_credit

DIVE = {
    "action_type": "407c",
    "difficulty": 3.2,
    "dive_score": 65.6,
    "sub_actions": ["Inward", "3.5 Soms.Tuck", "Entry"],
}


def conversation(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def test_accuracy_is_the_verifier_for_a_class_label():
    task = get_task("shapes")
    (accuracy,) = build_rewards(["accuracy"], task)
    label = json.dumps({"label": "red square moving left", "speed": None})
    completions = [
        "A square moves.\nAnswer: red square moving left",
        "A square moves.\nAnswer: blue square moving left",
        conversation("Its colour is red.\nAnswer: red square moving left"),  # TRL's conversational completions
        "I cannot tell.",
    ]
    assert accuracy(completions, label=[label] * 4) == [1.0, 0.0, 1.0, 0.0]
    assert accuracy.__name__ == "accuracy"


def test_action_quality_gets_partial_credit_per_field():
    task = get_task("action_quality")
    (accuracy,) = build_rewards(["accuracy"], task)
    exact = "Answer: " + task.label_text(DIVE)
    close = "Answer: action sequence: Inward, 2.5 Soms.Tuck, Entry. action difficulty: 3.2. final score: 60"
    far = "Answer: action sequence: Back, 1.5 Twists. action difficulty: 2.0. final score: 200"
    values = accuracy([exact, close, far], label=[json.dumps(DIVE)] * 3)
    assert values[0] == 1.0
    # Sub-actions 2 of 3 in order, difficulty right, score 1 - 5.6 / 65.6.
    assert values[1] == pytest.approx((2 / 3 + 1 + (1 - 5.6 / 65.6)) / 3)
    # Nothing in common, difficulty off by 1.2 / 3.2, score off by more than the label: no score credit.
    assert values[2] == pytest.approx((0 + (1 - 1.2 / 3.2) + 0) / 3)


def test_field_credit():
    assert field_credit(True, None, 3.0) == 1.0
    assert field_credit(False, None, 3.0) == 0.0
    assert field_credit(False, 2.0, 4.0) == 0.5
    assert field_credit(False, 100.0, 4.0) == 0.0
    assert field_credit(False, ["a", "c", "b"], ["a", "b", "c"]) == pytest.approx(2 / 3)
    assert field_credit(False, "blue", "red") == 0.0


def test_format_and_length():
    fmt, length = build_rewards(["format", "length"], get_task("shapes"), config=type("C", (), {"length_limit": 4}))
    assert fmt(["reasoning\nAnswer: red", "no final line here", "Answer:"]) == [1.0, 0.0, 0.0]
    assert length(["x", "y", "z"], completion_ids=[[1] * 3, [1] * 6, [1] * 20]) == [0.0, -0.5, -1.0]


def test_multiple_choice_reward_comes_from_its_verifier():
    task = get_task("multiple_choice")
    (accuracy,) = build_rewards(["accuracy"], task)
    row = {"question": "What runs?", "options": ["a cat", "a dog", "a fish", "a bird"], "answer": "B"}
    label = json.dumps(task.label(row))
    assert accuracy(["Answer: B", "Answer: C"], label=[label, label]) == [1.0, 0.0]


def test_registry_names_and_custom_rewards():
    with pytest.raises(UnknownNameError, match="accuracy"):
        build_rewards(["acuracy"], get_task("shapes"))

    @REWARDS.register("test_custom_constant")
    def constant(task, config):
        return lambda completions, **columns: [0.5] * len(completions)

    (custom,) = build_rewards(["test_custom_constant"], get_task("shapes"))
    assert custom(["a", "b"]) == [0.5, 0.5] and custom.__name__ == "test_custom_constant"
    described = describe_rewards(["accuracy", "test_custom_constant"], [1.0, 0.5])
    assert described[0]["weight"] == 1.0 and "verifier" in described[0]["definition"]
    assert described[1] == {"name": "test_custom_constant", "weight": 0.5, "definition": "custom reward (registered)"}
