"""Deterministic evaluation metrics: pure functions over predictions and labels, no model code.

- action recognition: accuracy, per-class accuracy, the most frequent confusions, the unparsed share;
- action quality (FineDiving): Spearman's rho between predicted and true dive scores, relative L2 distance (R-l2),
  mean absolute errors of score and difficulty, exact sub-action sequence accuracy, parse rates;
- multiple-choice QA: robust option parsing (`parse_choice`) and accuracy;
- every run: the yield of the loop's own verifier.

`task_metrics` computes the metrics of a task from the per-example predictions of `vstar.evaluate.run`; the same
metrics ship as `evaluate` modules (`load_metric`). All results are JSON-safe: an undefined value is `None`, never NaN.

```bash
python -c "from vstar.evaluate.metrics import spearman; print(spearman([1, 2, 3, 4], [1, 3, 2, 4]))"  # 0.8
```
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vstar.verify.choice import option_keys, parse_choice, reference_key

__all__ = [
    "classification_metrics",
    "generic_metrics",
    "load_metric",
    "multiple_choice_metrics",
    "parse_choice",
    "quality_metrics",
    "relative_l2",
    "spearman",
    "task_metrics",
    "yield_metric",
]

if TYPE_CHECKING:
    import evaluate

MODULES_DIR = Path(__file__).resolve().parent / "modules"
METRIC_MODULES = ("vstar_action_recognition", "vstar_action_quality", "vstar_multiple_choice")


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _check_lengths(**sequences: Sequence[Any] | None) -> int:
    lengths = {name: len(seq) for name, seq in sequences.items() if seq is not None}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"Inputs must have the same length; got {lengths}.")
    return next(iter(lengths.values()), 0)


def _missing(value: Any) -> bool:
    """Whether a predicted number is absent (None or NaN)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


# ---------------------------------------------------------------------------------------------------------------
# Classification (action recognition, shapes)
# ---------------------------------------------------------------------------------------------------------------


def classification_metrics(
    predictions: Sequence[str | None],
    references: Sequence[str],
    correct: Sequence[bool] | None = None,
    top_confusions: int = 10,
) -> dict[str, Any]:
    """Accuracy, per-class accuracy, the most frequent confusions and the share of unparsed answers.

    Args:
        predictions: the predicted class of each example; `None` (or "") when the answer concludes no class.
        references: the true class of each example.
        correct: the verifier's verdict of each example. When given, `accuracy` is its mean (the verifier may reject
            an answer whose predicted class equals the label, e.g. a hedge); otherwise a prediction is correct when it
            equals the reference exactly.
        top_confusions: how many confusions to report.

    Returns:
        `accuracy`, `balanced_accuracy` (mean of the per-class accuracies), `per_class_accuracy` ({class: accuracy},
        classes sorted), `confusions` ([{"label", "prediction", "count"}], most frequent first; only wrong answers
        that name a class other than the label: unparsed answers are counted by `unparsed_rate`), `unparsed_rate`
        and `num_examples`. Rates are `None` when there are no examples.
    """
    n = _check_lengths(predictions=predictions, references=references, correct=correct)
    preds = [None if p is None or str(p).strip() == "" else str(p) for p in predictions]
    refs = [str(r) for r in references]
    if correct is None:
        hits = [p is not None and p == r for p, r in zip(preds, refs)]
    else:
        hits = [bool(c) for c in correct]
    by_class: dict[str, list[bool]] = defaultdict(list)
    for ref, hit in zip(refs, hits):
        by_class[ref].append(hit)
    per_class = {label: sum(v) / len(v) for label, v in sorted(by_class.items())}
    pairs = Counter((r, p) for r, p, hit in zip(refs, preds, hits) if not hit and p is not None and p != r)
    ranked = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0][0], kv[0][1]))[: max(top_confusions, 0)]
    return {
        "accuracy": _mean(hits),
        "balanced_accuracy": _mean(list(per_class.values())),
        "per_class_accuracy": per_class,
        "confusions": [{"label": r, "prediction": p, "count": c} for (r, p), c in ranked],
        "unparsed_rate": sum(p is None for p in preds) / n if n else None,
        "num_examples": n,
    }


# ---------------------------------------------------------------------------------------------------------------
# Action quality (FineDiving)
# ---------------------------------------------------------------------------------------------------------------


def rank_average(values: Sequence[float]) -> list[float]:
    """Ranks 1..n of the values, tied values sharing the average of their ranks (`scipy.stats.rankdata`'s default).

    Args:
        values: numbers.
    """
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        average = (i + j) / 2 + 1
        for k in range(i, j + 1):
            ranks[order[k]] = average
        i = j + 1
    return ranks


def _pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    dx = [v - mx for v in x]
    dy = [v - my for v in y]
    sxx = sum(v * v for v in dx)
    syy = sum(v * v for v in dy)
    if sxx == 0 or syy == 0:
        return None
    r = sum(a * b for a, b in zip(dx, dy)) / math.sqrt(sxx * syy)
    return max(-1.0, min(1.0, r))


def _numbers(values: Sequence[Any], name: str) -> list[float]:
    out = []
    for v in values:
        if _missing(v) or not math.isfinite(float(v)):
            raise ValueError(f"{name} holds a missing or non-finite value ({v!r}); drop or impute it first.")
        out.append(float(v))
    return out


def spearman(pred: Sequence[float], true: Sequence[float]) -> float | None:
    """Spearman's rank correlation: the Pearson correlation of the average ranks (ties share their mean rank).

    Equals `scipy.stats.spearmanr(pred, true).statistic`, ties included.

    Args:
        pred: predicted scores.
        true: true scores (same length).

    Returns:
        rho in [-1, 1]; `None` when it is undefined: fewer than two pairs, or either side constant.
    """
    _check_lengths(pred=pred, true=true)
    x, y = _numbers(pred, "pred"), _numbers(true, "true")
    if len(x) < 2:
        return None
    return _pearson(rank_average(x), rank_average(y))


def relative_l2(
    pred: Sequence[float], true: Sequence[float], score_range: tuple[float, float] | None = None
) -> float | None:
    """The relative L2 distance of action quality assessment (R-l2), in percent-squared units.

    R-l2 = 100 / K * sum_k (|p_k - t_k| / (s_max - s_min))^2, where s_max and s_min are the largest and smallest true
    scores of the given examples, unless `score_range` fixes them (e.g. the range of the whole dataset, so that
    subsets compare).

    Args:
        pred: predicted scores.
        true: true scores (same length).
        score_range: (s_min, s_max) to normalise by; default: the range of `true`.

    Returns:
        R-l2 (0 is perfect); `None` when there are no examples or the range is empty.
    """
    _check_lengths(pred=pred, true=true)
    x, y = _numbers(pred, "pred"), _numbers(true, "true")
    if not y:
        return None
    low, high = (min(y), max(y)) if score_range is None else (float(score_range[0]), float(score_range[1]))
    width = high - low
    if width <= 0:
        return None
    return 100.0 * sum(((p - t) / width) ** 2 for p, t in zip(x, y)) / len(y)


def _normalise_item(item: Any) -> str:
    return " ".join(str(item).split()).casefold()


def _sequence_equal(pred: Sequence[Any], true: Sequence[Any]) -> bool:
    return [_normalise_item(x) for x in pred] == [_normalise_item(x) for x in true]


def quality_metrics(
    pred_scores: Sequence[float | None],
    true_scores: Sequence[float],
    pred_difficulty: Sequence[float | None] | None = None,
    true_difficulty: Sequence[float | None] | None = None,
    pred_sequences: Sequence[Sequence[str] | None] | None = None,
    true_sequences: Sequence[Sequence[str] | None] | None = None,
    score_range: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Action quality metrics (FineDiving): rank correlation, R-l2, errors, sequence accuracy and parse rates.

    An unparsed prediction (`None`/NaN) is excluded from `spearman`, `relative_l2`, `score_mae` and `difficulty_mae`
    (these describe the answers that state a number) but counted in the parse rates. So that missing answers are
    penalised honestly, `spearman_with_unparsed_as_mean` imputes each unparsed score with the mean of the parsed
    predicted scores (an uninformative guess, tied in rank with the other unparsed ones) and correlates all examples.
    `sequence_accuracy` counts an unparsed sequence as wrong. Sequences compare item by item, ignoring case and
    repeated whitespace; a left-out final "Entry" is a mismatch here.

    Args:
        pred_scores: predicted dive scores (`None` when unparseable).
        true_scores: true dive scores.
        pred_difficulty: predicted degrees of difficulty (optional).
        true_difficulty: true degrees of difficulty (optional; `None` entries are skipped).
        pred_sequences: predicted sub-action sequences (optional).
        true_sequences: true sub-action sequences in temporal order (optional; `None` entries are skipped).
        score_range: (min, max) for R-l2; default: the range of all `true_scores`.

    Returns:
        `spearman`, `spearman_with_unparsed_as_mean`, `relative_l2`, `score_mae`, `difficulty_mae`,
        `sequence_accuracy`, `score_parse_rate`, `difficulty_parse_rate`, `sequence_parse_rate`, `parse_rate` (share
        of examples whose every requested field parsed), `num_examples`, `num_scored`. Undefined values are `None`.
    """
    n = _check_lengths(
        pred_scores=pred_scores,
        true_scores=true_scores,
        pred_difficulty=pred_difficulty,
        true_difficulty=true_difficulty,
        pred_sequences=pred_sequences,
        true_sequences=true_sequences,
    )
    if (pred_difficulty is None) != (true_difficulty is None) or (pred_sequences is None) != (true_sequences is None):
        raise ValueError("Give predicted and true difficulties (and sequences) together, or neither.")
    truth = _numbers(true_scores, "true_scores")
    scored = [i for i in range(n) if not _missing(pred_scores[i])]
    parsed_pred = [float(pred_scores[i]) for i in scored]
    parsed_true = [truth[i] for i in scored]
    if score_range is None and truth:
        score_range = (min(truth), max(truth))
    imputed = None
    if parsed_pred:
        fill = sum(parsed_pred) / len(parsed_pred)
        imputed = spearman([fill if _missing(p) else float(p) for p in pred_scores], truth)
    parsed_fields = [[not _missing(p) for p in pred_scores]]
    metrics: dict[str, Any] = {
        "spearman": spearman(parsed_pred, parsed_true),
        "spearman_with_unparsed_as_mean": imputed,
        "relative_l2": relative_l2(parsed_pred, parsed_true, score_range) if scored else None,
        "score_mae": _mean([abs(p - t) for p, t in zip(parsed_pred, parsed_true)]),
        "difficulty_mae": None,
        "sequence_accuracy": None,
        "score_parse_rate": len(scored) / n if n else None,
        "difficulty_parse_rate": None,
        "sequence_parse_rate": None,
    }
    if pred_difficulty is not None and true_difficulty is not None:
        parsed = [not _missing(p) for p in pred_difficulty]
        errors = [
            abs(float(p) - float(t))
            for p, t, ok in zip(pred_difficulty, true_difficulty, parsed)
            if ok and t is not None
        ]
        metrics["difficulty_mae"] = _mean(errors)
        metrics["difficulty_parse_rate"] = sum(parsed) / n if n else None
        parsed_fields.append(parsed)
    if pred_sequences is not None and true_sequences is not None:
        parsed = [bool(p) for p in pred_sequences]
        hits = [ok and _sequence_equal(p, t) for p, t, ok in zip(pred_sequences, true_sequences, parsed) if t]
        metrics["sequence_accuracy"] = _mean(hits)
        metrics["sequence_parse_rate"] = sum(parsed) / n if n else None
        parsed_fields.append(parsed)
    metrics["parse_rate"] = sum(all(flags) for flags in zip(*parsed_fields)) / n if n else None
    metrics["num_examples"] = n
    metrics["num_scored"] = len(scored)
    return metrics


# ---------------------------------------------------------------------------------------------------------------
# Multiple choice
# ---------------------------------------------------------------------------------------------------------------


def multiple_choice_metrics(
    answers: Sequence[str | None],
    options_list: Sequence[Mapping[str, str] | Sequence[str]],
    references: Sequence[str | int],
) -> dict[str, Any]:
    """Multiple-choice accuracy with robust option parsing (see `parse_choice`).

    Args:
        answers: the model's answers.
        options_list: the options of each question ({key: text}, or texts in order lettered A, B, ...).
        references: the correct option of each question: its key ("B", "(B)"), its index (1) or its text.

    Returns:
        `accuracy` (an unparsed or ambiguous answer is wrong), `unparsed_rate`, `parse_rate`,
        `choice_distribution` ({key: share of parsed answers}, to spot a model that always says "A"),
        `num_examples` and `choices` (the parsed key of each answer, `None` if unparsed).
    """
    n = _check_lengths(answers=answers, options_list=options_list, references=references)
    choices: list[str | None] = []
    hits: list[bool] = []
    for answer, options, reference in zip(answers, options_list, references):
        keys = option_keys(options)
        choice = parse_choice(answer, keys)
        choices.append(choice)
        hits.append(choice is not None and choice == reference_key(reference, keys))
    parsed = [c for c in choices if c is not None]
    counts = Counter(parsed)
    return {
        "accuracy": _mean(hits),
        "unparsed_rate": (n - len(parsed)) / n if n else None,
        "parse_rate": len(parsed) / n if n else None,
        "choice_distribution": {k: counts[k] / len(parsed) for k in sorted(counts)},
        "num_examples": n,
        "choices": choices,
    }


# ---------------------------------------------------------------------------------------------------------------
# Verifier yield and per-task dispatch
# ---------------------------------------------------------------------------------------------------------------


def yield_metric(verdicts: Sequence[bool]) -> float | None:
    """The yield of the loop's own verifier: the share of answers it accepts (`None` for no answers).

    Args:
        verdicts: whether each answer passed verification.
    """
    return _mean([bool(v) for v in verdicts])


def generic_metrics(predictions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-field metrics of the generic task, keyed `<column>/<metric>`; the field's kind is read from its labels.

    A text label is a class (`classification_metrics`: accuracy, per-class accuracy, confusions, unparsed rate); a
    number gets `spearman`, `mae` and `parse_rate`; a list of steps gets `sequence_accuracy` and `parse_rate`.

    Args:
        predictions: per-example dicts with `label` and `prediction` (see `task_metrics`).
    """
    metrics: dict[str, Any] = {}
    columns = list(dict.fromkeys(k for p in predictions for k in (p.get("label") or {})))
    for column in columns:
        pairs = [((p.get("prediction") or {}).get(column), p["label"].get(column)) for p in predictions]
        pairs = [(pred, true) for pred, true in pairs if true is not None]
        if not pairs:
            continue
        truths = [t for _, t in pairs]
        if all(isinstance(t, (list, tuple)) for t in truths):
            hits = [bool(p) and _sequence_equal(p, t) for p, t in pairs]
            values = {"sequence_accuracy": _mean(hits), "parse_rate": _mean([bool(p) for p, _ in pairs])}
        elif all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in truths):
            scored = [(float(p), float(t)) for p, t in pairs if not _missing(p)]
            values = {
                "spearman": spearman([p for p, _ in scored], [t for _, t in scored]) if scored else None,
                "mae": _mean([abs(p - t) for p, t in scored]),
                "parse_rate": len(scored) / len(pairs),
            }
        else:
            values = classification_metrics([p for p, _ in pairs], [str(t) for t in truths])
            values.pop("num_examples")
        metrics.update({f"{column}/{k}": v for k, v in values.items()})
    return metrics


def task_metrics(task_name: str, predictions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The metrics of a task from the per-example predictions of `vstar.evaluate.run.score_answers`.

    Each prediction has `label` (the task's label dict), `prediction` (what `task.score` parsed, `None` values when
    unparseable) and `correct` (the verifier's verdict). Every task gets `accuracy` and `verifier_yield` (both the
    mean of `correct`) and `num_examples`; `action_recognition` and `shapes` add `classification_metrics` on the
    `label` field; `action_quality` adds `quality_metrics` on `dive_score`, `difficulty` and `sub_actions`;
    `multiple_choice` adds `multiple_choice_metrics` (read from each prediction's `answer` and its label's
    `options` and `answer`); `generic` adds `generic_metrics`. Unknown tasks get accuracy and yield only.

    Args:
        task_name: the registered task name.
        predictions: per-example prediction dicts.
    """
    verdicts = [bool(p.get("correct")) for p in predictions]
    metrics: dict[str, Any] = {}
    if task_name in ("action_recognition", "shapes"):
        metrics.update(
            classification_metrics(
                [(p.get("prediction") or {}).get("label") for p in predictions],
                [p["label"]["label"] for p in predictions],
                correct=verdicts,
            )
        )
    elif task_name == "action_quality":

        def field(name: str, source: str) -> list[Any]:
            return [(p.get(source) or {}).get(name) for p in predictions]

        metrics.update(
            quality_metrics(
                field("dive_score", "prediction"),
                field("dive_score", "label"),
                field("difficulty", "prediction"),
                field("difficulty", "label"),
                field("sub_actions", "prediction"),
                field("sub_actions", "label"),
            )
        )
    elif task_name == "multiple_choice":
        mc = multiple_choice_metrics(
            [p.get("answer") for p in predictions],
            [p["label"]["options"] for p in predictions],
            [p["label"]["answer"] for p in predictions],
        )
        mc.pop("choices")  # per example, already in the predictions
        metrics.update(mc)
    elif task_name == "generic":
        metrics.update(generic_metrics(predictions))
    metrics["accuracy"] = yield_metric(verdicts)
    metrics["verifier_yield"] = yield_metric(verdicts)
    metrics["num_examples"] = len(predictions)
    return metrics


def load_metric(name: str, **kwargs: Any) -> evaluate.EvaluationModule:
    """Load one of the packaged `evaluate` modules from its local path (no network).

    Args:
        name: `vstar_action_recognition`, `vstar_action_quality` or `vstar_multiple_choice` (the `vstar_` prefix
            may be left out).
        kwargs: passed to `evaluate.load` (e.g. `experiment_id`).
    """
    import evaluate

    module = name if name.startswith("vstar_") else f"vstar_{name}"
    if module not in METRIC_MODULES:
        raise KeyError(f"Unknown metric {name!r}; known metrics: {', '.join(METRIC_MODULES)}.")
    return evaluate.load(str(MODULES_DIR / module / f"{module}.py"), **kwargs)
