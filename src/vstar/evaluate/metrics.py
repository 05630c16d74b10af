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
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vstar.verify.answer import (
    MAX_CONCLUSION_CHARS,
    find_conclusion,
    is_negated,
    normalize_text,
    split_sentences,
    stem,
)

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

# Words that introduce a choice: "option B", "choice (c)", "letter D".
_CHOICE_WORDS = r"(?i:(?:option|choice|letter|alternative)s?)"
# Words after which a bare letter reads as a choice ("B is correct", "B because ...").
_LETTER_FOLLOWERS = (
    r"(?i:is|are|was|were|seems?|appears?|looks?|would|should|must|could|might|can|because|since|as|and|or|but|which|"
    r"fits?|matches|describes?)"
)
_PREPOSITIONS = frozenset("in on at to of with from by for into onto over under".split())
_STOPWORDS = frozenset("a an the is are was were be been being it its this that these those".split())
_WORD_RE = re.compile(r"[^\W_]+")
# Decoration around a whole answer: "**B**", "(B)", "'B'.", "B."
_DECORATION = " \t\n*_`'\"()[]{}<>.,:;!?-"
# A choice at the very start of a piece: "B", "B)", "(B)", "B.", "B:", "[B]", "B - text", "**B**: text".
_LEADING_RE = re.compile(r"^[\s*_#>`\"']*[(\[]?([A-Za-z0-9])(?:[)\].:]|\s+[-–—]\s|\s*$|\*\*)")
# Where a model writes its final answer when it gives no designated line: a bounded tail is enough.
_MAX_WHOLE_CHARS = 300


class _Ambiguous(Exception):
    """Two or more options named as the answer."""


def _option_keys(options: Mapping[str, str] | Sequence[str]) -> dict[str, str]:
    """Options as {KEY: text} with upper-case keys; a sequence is lettered A, B, C, ..."""
    if isinstance(options, Mapping):
        items = [(str(k).strip().upper(), str(v)) for k, v in options.items()]
    else:
        items = [(chr(ord("A") + i), str(v)) for i, v in enumerate(options)]
    keys = dict(items)
    if len(keys) != len(items) or "" in keys:
        raise ValueError(f"Option keys must be distinct and non-empty; got {[k for k, _ in items]}.")
    return keys


def _letter_negated(piece: str, start: int, end: int) -> bool:
    """Whether the letter at `piece[start:end]` is negated ("not A", "rather than (C)", "A is wrong")."""
    before = normalize_text(piece[:start])
    after = normalize_text(piece[end:])
    norm = f"{before} choice {after}"
    return is_negated(norm, len(before) + 1, len(before) + 7)


def _letter_mentions(piece: str, keys: Mapping[str, str]) -> set[str]:
    """The option keys a piece names as letters (not negated)."""
    letters = "".join(sorted({k for k in keys if len(k) == 1 and k.isalnum()}))
    if not letters:
        return set()
    cls = "[" + re.escape(letters) + re.escape(letters.lower()) + "]"
    upper = "[" + re.escape(letters) + "]"
    end = r"(?:\s*$|[).\]:,;!?]|\s+[-–—]\s|\s+" + _LETTER_FOLLOWERS + r"\b)"
    patterns = [
        # "(B)", "[b]"
        r"[(\[{](" + cls + r")[)\]}]",
        # "option B", "choice c", "options: D"
        r"\b" + _CHOICE_WORDS + r"\s*[:=]?\s*[(\[]?(" + cls + r")(?![\w'])",
        # "answer: b.", "answer is c" (a lower-case letter only before punctuation or the end: "the answer is a man")
        r"\b(?i:answer\s*(?:is|would\s+be|should\s+be|must\s+be|[:=]))\s*(" + cls + r")(?=" + end + r")",
        # a bare capital before the end, punctuation or a verb: "I'd pick C.", "B is correct"
        r"(?<![\w'\-])(" + upper + r")(?=" + end + r")",
    ]
    found: set[str] = set()
    for pattern in patterns:
        for m in re.finditer(pattern, piece):
            if not _letter_negated(piece, m.start(1), m.end(1)):
                found.add(m.group(1).upper())
    return found


def _content_tokens(text: str) -> list[tuple[str, int, int]]:
    """Stemmed content words of normalised text with their positions (articles and copulas dropped)."""
    return [(_stem(m.group(0)), m.start(), m.end()) for m in _WORD_RE.finditer(text) if m.group(0) not in _STOPWORDS]


def _stem(word: str) -> str:
    # Adverbs read as their adjective: "normally" as "normal", "slowly" as "slow".
    return stem(word[:-2] if len(word) > 5 and word.endswith("ly") else word)


def _text_mentions(piece: str, keys: Mapping[str, str]) -> set[str]:
    """The options whose text a piece states, read as stemmed content words.

    An option counts when the piece states its whole text (in order), or all the words that only this option has
    ("running" of "The man is running" among other things the man does; prepositions aside). Negated mentions and a
    mention inside a longer one ("walking" inside "walking slowly") are dropped.
    """
    norm = normalize_text(piece)
    tokens = _content_tokens(norm)
    words = [t[0] for t in tokens]
    options = {key: [t[0] for t in _content_tokens(normalize_text(text))] for key, text in keys.items()}
    spans: list[tuple[int, int, str, bool]] = []
    for key, phrase in options.items():
        size = len(phrase)
        for i in range(len(words) - size + 1) if size else ():
            if words[i : i + size] == phrase:
                spans.append((i, i + size, key, is_negated(norm, tokens[i][1], tokens[i + size - 1][2])))
    for key, phrase in options.items():
        others = {w for k, v in options.items() if k != key for w in v}
        unique = [w for w in dict.fromkeys(phrase) if w not in others]
        unique = [w for w in unique if w not in _PREPOSITIONS] or unique
        positions = []
        for word in unique:
            found = [i for i, w in enumerate(words) if w == word and not is_negated(norm, tokens[i][1], tokens[i][2])]
            if not found:
                break
            positions.append(found[0])
        if unique and len(positions) == len(unique):
            spans.append((min(positions), max(positions) + 1, key, False))
    kept = set()
    for s, e, key, negated in spans:
        inside_longer = any(s2 <= s and e <= e2 and (e2 - s2) > (e - s) for s2, e2, _, _ in spans)
        if not negated and not inside_longer:
            kept.add(key)
    return kept


def _resolve(piece: str, keys: Mapping[str, str]) -> str | None:
    """The one option a piece names; None if it names none; raises `_Ambiguous` if it names several."""
    piece = piece.strip()
    if not piece:
        return None
    bare = piece.strip(_DECORATION).upper()
    if bare in keys:
        return bare
    leading = _LEADING_RE.match(piece)
    if leading and leading.group(1).upper() in keys:
        # "B. Option A is similar, but ...": the leading letter decides unless its own sentence names another.
        first = split_sentences(piece)[0] if split_sentences(piece) else piece
        if _letter_mentions(first, keys) - {leading.group(1).upper()}:
            raise _Ambiguous
        return leading.group(1).upper()
    for mentions in (_letter_mentions(piece, keys), _text_mentions(piece, keys)):
        if len(mentions) == 1:
            return mentions.pop()
        if len(mentions) > 1:
            raise _Ambiguous
    return None


def parse_choice(answer: str | None, options: Mapping[str, str] | Sequence[str]) -> str | None:
    """The option an answer chooses: its key (upper case), or `None` if it names none or several.

    Reads a letter ("B", "(B)", "B.", "b)", "Answer: B", "The answer is option B", "**B**", "\\boxed{B}"), a letter
    with text ("B) The man is walking") and the option text alone ("The man is walking", or "He walks" when only that
    option says "walking"; compared as words after case, punctuation, articles and inflections are normalised; a
    mention of a shorter option inside a longer one counts as the longer). Negated mentions ("not A", "rather than
    C", "A is wrong") are skipped.

    Only the conclusion counts: the designated final answer ("Answer: ...", "The answer is ...") if there is one,
    else the last conclusive sentence (or first the last line, when it opens with a letter: "B. Because ..."), then
    the last line and, for a short answer, the whole text. The first of these that names any option decides; naming
    two or more ("A or B", "B and D") gives `None`. A leading letter ("B. ...", "(C) ...") wins over mentions in
    later sentences, and a letter wins over option text.

    Args:
        answer: the model's answer.
        options: {key: option text} ("A": "...", ...), or the option texts in order (keys A, B, C, ...).
    """
    keys = _option_keys(options)
    if not answer or not str(answer).strip():
        return None
    text = str(answer).strip()
    conclusion = find_conclusion(text)
    lines = [line for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    leading = _LEADING_RE.match(last)
    if not conclusion.designated and leading and leading.group(1).upper() in keys:
        # "B. Option A is close, but ...": a final line that opens with a letter answers with it.
        pieces = [last[:MAX_CONCLUSION_CHARS], conclusion.text]
    else:
        pieces = [conclusion.text, last[-MAX_CONCLUSION_CHARS:]]
    if len(text) <= _MAX_WHOLE_CHARS:
        pieces.append(text)
    seen: set[str] = set()
    for piece in pieces:
        if not piece or piece in seen:
            continue
        seen.add(piece)
        try:
            choice = _resolve(piece, keys)
        except _Ambiguous:
            return None
        if choice is not None:
            return choice
    return None


def _reference_key(reference: Any, keys: Mapping[str, str]) -> str:
    if isinstance(reference, int) and not isinstance(reference, bool) and 0 <= reference < len(keys):
        return list(keys)[reference]
    ref = str(reference).strip()
    if ref.upper() in keys:
        return ref.upper()
    key = parse_choice(ref, keys)
    if key is None:
        raise ValueError(f"Reference {reference!r} names none of the options {list(keys)}.")
    return key


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
        keys = _option_keys(options)
        choice = parse_choice(answer, keys)
        choices.append(choice)
        hits.append(choice is not None and choice == _reference_key(reference, keys))
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


def task_metrics(task_name: str, predictions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The metrics of a task from the per-example predictions of `vstar.evaluate.run.score_answers`.

    Each prediction has `label` (the task's label dict), `prediction` (what `task.score` parsed, `None` values when
    unparseable) and `correct` (the verifier's verdict). Every task gets `accuracy` and `verifier_yield` (both the
    mean of `correct`) and `num_examples`; `action_recognition` and `shapes` add `classification_metrics` on the
    `label` field; `action_quality` adds `quality_metrics` on `dive_score`, `difficulty` and `sub_actions`. Unknown
    tasks get accuracy and yield only.

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
