"""Rewards for GRPO from the task verifiers: accuracy (with partial credit), format, length.

A reward is registered by name as a factory: `factory(task, config) -> reward function`, where the reward
function is what TRL's `GRPOTrainer` calls, `fn(completions, label, **columns) -> list[float]`, one value per
completion (`label` is each row's task label as JSON). Recipes name rewards and weigh them:

```yaml
rewards: [accuracy, format]
reward_weights: [1.0, 0.2]
```

Custom rewards are registered from Python before training:

```python
from vstar.train.rewards import REWARDS, completion_text

@REWARDS.register("short")
def short(task, config):
    def short(completions, **columns):
        return [1.0 if len(completion_text(c)) < 200 else 0.0 for c in completions]
    return short
```

Definitions (also written into the model card, `describe_rewards`):
- `accuracy`: 1 when the task's verifier accepts the answer's conclusion for every label field; otherwise the mean
  over the verified fields of a per-field credit: 1 for a field that passes, `1 - min(1, |pred - label| / |label|)`
  for a numeric field (a score, a difficulty, a speed), the longest common subsequence of the predicted and the
  labelled items over the longer of the two for a sequence (sub-actions in order), 0 for anything else (a wrong
  class, a wrong choice, no conclusion). Tasks with one categorical field (action recognition, multiple choice,
  the demo) therefore get 0 or 1.
- `format`: 1 when the answer ends in a final-answer line the verifiers read (`Answer: ...`), else 0.
- `length`: 0 up to `length_limit` completion tokens, then falling linearly to -1 at twice the limit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vstar.registry import Registry

RewardFunction = Callable[..., list[float]]
REWARDS: Registry[Callable[[Any, Any], RewardFunction]] = Registry("reward")

DEFINITIONS: dict[str, str] = {
    "accuracy": "1 if the task's verifier accepts every label field; else the mean per-field credit: 1 for a passing "
    "field, 1 - min(1, relative error) for a numeric field, LCS / max length for a sequence of steps, 0 otherwise",
    "format": "1 if the answer ends in a final-answer line the verifier reads (`Answer: ...`), else 0",
    "length": "0 up to `length_limit` completion tokens, then linearly down to -1 at twice the limit",
}


def completion_text(completion: Any) -> str:
    """The text of a completion: a string, or a conversation whose last message holds it."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion:
        content = completion[-1].get("content", "")
        if isinstance(content, str):
            return content
        return "".join(part.get("text") or "" for part in content if part.get("type") == "text")
    return ""


def parse_label(label: Any) -> dict[str, Any]:
    """A row's label: stored as JSON text in the GRPO dataset (one schema for every task)."""
    if isinstance(label, Mapping):
        return dict(label)
    return json.loads(label)


def _as_items(value: Any) -> list[str] | None:
    if not isinstance(value, (list, tuple)):
        return None
    from vstar.verify.answer import normalize_text
    from vstar.verify.sequence import item_name

    return [normalize_text(v if isinstance(v, str) else item_name(v)) for v in value]


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        previous = 0
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], previous + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def field_credit(passed: bool, predicted: Any, expected: Any) -> float:
    """The partial credit of one label field (see the module docstring).

    Args:
        passed: whether the verifier accepted the field.
        predicted: the task's predicted value for the field (`Task.score`), `None` when unparseable.
        expected: the label's value.
    """
    if passed:
        return 1.0
    if predicted is None or expected is None:
        return 0.0
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        try:
            predicted = float(predicted)
        except (TypeError, ValueError):
            return 0.0
        scale = abs(float(expected)) or 1.0
        return 1.0 - min(1.0, abs(predicted - float(expected)) / scale)
    expected_items, predicted_items = _as_items(expected), _as_items(predicted)
    if expected_items is not None and predicted_items is not None:
        longest = max(len(expected_items), len(predicted_items))
        return _lcs(predicted_items, expected_items) / longest if longest else 0.0
    return 0.0


def accuracy_value(task, answer: str, label: Mapping[str, Any]) -> float:
    """The accuracy reward of one answer (1 when verified, else the mean per-field credit).

    Args:
        task: the task whose verifier judges the answer.
        answer: the completion text.
        label: the task label.
    """
    verdict = task.verify(answer, label)
    if verdict.passed:
        return 1.0
    if len(verdict.fields) <= 1:
        return 0.0
    try:
        predicted = task.score(answer, label)
    except NotImplementedError:
        predicted = {}
    credits = [field_credit(f.passed, predicted.get(name), label.get(name)) for name, f in verdict.fields.items()]
    return sum(credits) / len(credits)


@REWARDS.register("accuracy")
def accuracy_reward(task, config=None) -> RewardFunction:
    """The task's verifier as a reward, with partial credit per field."""

    def accuracy(completions, label, **columns) -> list[float]:
        return [accuracy_value(task, completion_text(c), parse_label(y)) for c, y in zip(completions, label)]

    return accuracy


@REWARDS.register("format")
def format_reward(task=None, config=None) -> RewardFunction:
    """1 for an answer with a final-answer line the verifier reads."""
    from vstar.verify.answer import find_conclusion

    def format(completions, **columns) -> list[float]:  # noqa: A001 (the reward's name in logs)
        values = []
        for completion in completions:
            conclusion = find_conclusion(completion_text(completion))
            values.append(1.0 if conclusion.designated and conclusion.text.strip() else 0.0)
        return values

    return format


@REWARDS.register("length")
def length_reward(task=None, config=None) -> RewardFunction:
    """A penalty for completions longer than `config.length_limit` tokens."""
    limit = max(1, int(getattr(config, "length_limit", 256) or 256))

    def length(completions, completion_ids=None, **columns) -> list[float]:
        sizes = [len(ids) for ids in completion_ids] if completion_ids is not None else [len(c) for c in completions]
        return [-min(1.0, max(0, n - limit) / limit) for n in sizes]

    return length


def build_rewards(names: Sequence[str], task, config=None) -> list[RewardFunction]:
    """The reward functions a recipe names, in order (their weights are `reward_weights`, in the same order).

    Args:
        names: registered reward names.
        task: the task (its verifier and label fields).
        config: the training config (options such as `length_limit`).
    """
    functions = []
    for name in names:
        function = REWARDS.get(name)(task, config)
        function.__name__ = name  # TRL logs each reward under its function's name
        functions.append(function)
    return functions


def describe_rewards(names: Sequence[str], weights: Sequence[float] | None) -> list[dict[str, Any]]:
    """The rewards of a run as `[{"name", "weight", "definition"}]` (for the model card and the summary)."""
    weights = list(weights) if weights else [1.0] * len(names)
    return [
        {"name": name, "weight": float(weight), "definition": DEFINITIONS.get(name, "custom reward (registered)")}
        for name, weight in zip(names, weights)
    ]
