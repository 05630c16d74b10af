"""Metrics: hand-computed values, `scipy.stats.spearmanr` on random data, option parsing, the `evaluate` modules.

```bash
python -m pytest tests/evaluate/test_metrics.py -q -p no:cacheprovider
```
"""

import json
import math
import random
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr

from vstar.evaluate.metrics import (
    METRIC_MODULES,
    MODULES_DIR,
    classification_metrics,
    load_metric,
    multiple_choice_metrics,
    parse_choice,
    quality_metrics,
    rank_average,
    relative_l2,
    spearman,
    task_metrics,
    yield_metric,
)
from vstar.evaluate.run import score_answers
from vstar.tasks.base import get_task


def json_safe(value) -> str:
    return json.dumps(value, allow_nan=False)


def scipy_rho(x, y) -> float | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about constant input, then returns NaN
        rho = spearmanr(x, y).statistic
    return None if math.isnan(rho) else float(rho)


# ---------------------------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------------------------


def test_classification_exact_match_by_hand():
    preds = ["run", "run", "walk", None, "walk", "sit", "walk"]
    refs = ["run", "walk", "walk", "walk", "run", "run", "run"]
    m = classification_metrics(preds, refs)
    assert m["accuracy"] == pytest.approx(2 / 7)
    assert m["per_class_accuracy"] == {"run": pytest.approx(1 / 4), "walk": pytest.approx(1 / 3)}
    assert m["balanced_accuracy"] == pytest.approx((1 / 4 + 1 / 3) / 2)
    assert m["unparsed_rate"] == pytest.approx(1 / 7)
    assert m["num_examples"] == 7
    # Most frequent first, then by label/prediction; the unparsed answer is not a confusion.
    assert m["confusions"] == [
        {"label": "run", "prediction": "walk", "count": 2},
        {"label": "run", "prediction": "sit", "count": 1},
        {"label": "walk", "prediction": "run", "count": 1},
    ]
    assert classification_metrics(preds, refs, top_confusions=1)["confusions"] == m["confusions"][:1]
    json_safe(m)


def test_classification_uses_verifier_verdicts_when_given():
    # The verifier rejected a hedged answer whose parsed class equals the label, and accepted an alias.
    m = classification_metrics(["run", "jog", "walk"], ["run", "run", "walk"], correct=[False, True, True])
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["per_class_accuracy"] == {"run": 0.5, "walk": 1.0}
    assert m["confusions"] == []  # a rejected answer naming the label itself is no confusion


def test_classification_edge_cases():
    empty = classification_metrics([], [])
    assert empty["accuracy"] is None and empty["unparsed_rate"] is None and empty["per_class_accuracy"] == {}
    json_safe(empty)
    m = classification_metrics(["", "  ", None], ["a", "b", "c"])
    assert m["unparsed_rate"] == 1.0 and m["accuracy"] == 0.0
    with pytest.raises(ValueError):
        classification_metrics(["a"], ["a", "b"])
    with pytest.raises(ValueError):
        classification_metrics(["a"], ["a"], correct=[True, False])


# ---------------------------------------------------------------------------------------------------------------
# Spearman, R-l2
# ---------------------------------------------------------------------------------------------------------------


def test_rank_average_matches_scipy_rankdata():
    from scipy.stats import rankdata

    values = [3.0, 1.0, 3.0, 2.0, 3.0, -1.0, 2.0]
    assert rank_average(values) == list(rankdata(values))


def test_spearman_by_hand():
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # 1 - 6 * 2 / (4 * 15)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # Ties share their average rank: ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4) give 4.5 / sqrt(4.5 * 5) = 3 / sqrt(10).
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(3 / math.sqrt(10))
    assert spearman([10.0, 20.0, 20.0, 30.0], [1, 2, 3, 4]) == pytest.approx(scipy_rho([1, 2, 2, 3], [1, 2, 3, 4]))


def test_spearman_undefined_cases_are_none():
    assert spearman([5, 5, 5], [1, 2, 3]) is None  # constant predictions
    assert spearman([1, 2, 3], [7, 7, 7]) is None  # constant truth
    assert spearman([1.0], [2.0]) is None
    assert spearman([], []) is None
    with pytest.raises(ValueError):
        spearman([1, None, 3], [1, 2, 3])
    with pytest.raises(ValueError):
        spearman([1, float("nan"), 3], [1, 2, 3])
    with pytest.raises(ValueError):
        spearman([1, 2], [1, 2, 3])


@pytest.mark.parametrize("seed", range(20))
def test_spearman_matches_scipy_on_seeded_data(seed):
    rng = random.Random(seed)
    n = rng.randint(2, 60)
    if seed % 3 == 0:  # heavy ties: scores on a coarse grid, like judges' half points
        x = [rng.randint(0, 4) * 0.5 for _ in range(n)]
        y = [rng.randint(0, 6) * 0.5 for _ in range(n)]
    elif seed % 3 == 1:  # correlated continuous scores
        y = [rng.uniform(20, 100) for _ in range(n)]
        x = [v + rng.gauss(0, 10) for v in y]
    else:  # a constant side now and then
        x = [rng.choice([1.0, 2.0]) if seed % 2 else 3.0 for _ in range(n)]
        y = [rng.gauss(0, 1) for _ in range(n)]
    ours, reference = spearman(x, y), scipy_rho(x, y)
    if reference is None:
        assert ours is None
    else:
        assert ours == pytest.approx(reference, abs=1e-12)


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False, allow_subnormal=False)
coarse = st.integers(min_value=-3, max_value=3).map(float)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.one_of(finite, coarse), st.one_of(finite, coarse)), min_size=2, max_size=40))
def test_spearman_matches_scipy_property(pairs):
    x, y = [p[0] for p in pairs], [p[1] for p in pairs]
    ours, reference = spearman(x, y), scipy_rho(x, y)
    if reference is None:
        assert ours is None
    else:
        assert ours is not None and -1.0 <= ours <= 1.0
        assert ours == pytest.approx(reference, abs=1e-9)


def test_relative_l2_by_hand():
    # Range of the true scores is 80 - 40 = 40: ((10/40)^2 + 0 + (20/40)^2) / 3 * 100 = (0.0625 + 0.25) / 3 * 100.
    assert relative_l2([50, 60, 60], [40, 60, 80]) == pytest.approx(10.416666666666666)
    # A fixed range (0, 100): (0.01 + 0 + 0.04) / 3 * 100.
    assert relative_l2([50, 60, 60], [40, 60, 80], score_range=(0, 100)) == pytest.approx(5 / 3)
    assert relative_l2([1, 2], [1, 2]) == 0.0
    assert relative_l2([], []) is None
    assert relative_l2([1, 2], [3, 3]) is None  # zero range
    assert relative_l2([1, 2], [3, 3], score_range=(0, 10)) == pytest.approx(100 * (0.04 + 0.01) / 2)


# ---------------------------------------------------------------------------------------------------------------
# Action quality
# ---------------------------------------------------------------------------------------------------------------

SEQ = ["Inward", "3.5 Soms.Tuck", "Entry"]


def test_quality_metrics_by_hand_with_unparsed():
    m = quality_metrics(
        pred_scores=[60.0, None, 80.0, 70.0],
        true_scores=[50.0, 90.0, 70.0, 80.0],
        pred_difficulty=[3.0, None, 3.2, 2.0],
        true_difficulty=[3.2, 3.0, 3.2, 2.4],
        pred_sequences=[SEQ, None, ["Inward", "3.5 Soms.Tuck"], ["inward", " 3.5  soms.tuck", "ENTRY"]],
        true_sequences=[SEQ, SEQ, SEQ, SEQ],
    )
    # Parsed pairs (60, 50), (80, 70), (70, 80): pred ranks (1, 3, 2) vs true ranks (1, 2, 3) -> rho = 0.5.
    assert m["spearman"] == pytest.approx(0.5)
    # The unparsed score becomes the mean prediction 70, tied with the 70: ranks (1, 2.5, 4, 2.5) vs (1, 4, 2, 3).
    assert m["spearman_with_unparsed_as_mean"] == pytest.approx(scipy_rho([60, 70, 80, 70], [50, 90, 70, 80]))
    assert m["spearman_with_unparsed_as_mean"] == pytest.approx(0.31622776601683794)
    # Range of all true scores: 90 - 50 = 40; squared relative errors 1/16, 1/16, 1/16.
    assert m["relative_l2"] == pytest.approx(100 / 16)
    assert m["score_mae"] == pytest.approx(10.0)
    assert m["difficulty_mae"] == pytest.approx((0.2 + 0.0 + 0.4) / 3)
    # Exact sequence accuracy over all four (unparsed counts as wrong; case and spacing do not matter).
    assert m["sequence_accuracy"] == pytest.approx(2 / 4)
    assert m["score_parse_rate"] == m["difficulty_parse_rate"] == m["sequence_parse_rate"] == 0.75
    assert m["parse_rate"] == 0.75
    assert m["num_examples"] == 4 and m["num_scored"] == 3
    json_safe(m)


def test_quality_metrics_nan_is_unparsed_and_fields_are_independent():
    m = quality_metrics([float("nan"), 2.0, 3.0], [1.0, 2.0, 3.0], [None, 1.0, 1.0], [1.0, 1.0, 1.0])
    assert m["score_parse_rate"] == pytest.approx(2 / 3)
    assert m["spearman"] == pytest.approx(1.0)
    assert m["parse_rate"] == pytest.approx(2 / 3)
    assert m["sequence_accuracy"] is None and m["sequence_parse_rate"] is None
    m = quality_metrics([None, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, None, 1.0], [1.0, 1.0, 1.0])
    assert m["parse_rate"] == pytest.approx(1 / 3)  # every requested field parsed: only the last example


def test_quality_metrics_constant_and_unparsed_predictions_are_json_safe():
    constant = quality_metrics([70.0, 70.0, 70.0], [60.0, 70.0, 80.0])
    assert constant["spearman"] is None and constant["spearman_with_unparsed_as_mean"] is None
    assert constant["relative_l2"] == pytest.approx(100 * (1 / 4 + 0 + 1 / 4) / 3)  # errors 10 over a range of 20
    nothing = quality_metrics([None, None], [60.0, 80.0], [None, None], [3.0, 2.0], [None, []], [SEQ, SEQ])
    assert nothing["spearman"] is None and nothing["relative_l2"] is None and nothing["score_mae"] is None
    assert nothing["sequence_accuracy"] == 0.0 and nothing["parse_rate"] == 0.0
    json_safe(constant)
    json_safe(nothing)
    assert quality_metrics([], [])["spearman"] is None
    with pytest.raises(ValueError):
        quality_metrics([1.0], [1.0], pred_difficulty=[1.0])


# ---------------------------------------------------------------------------------------------------------------
# Multiple choice
# ---------------------------------------------------------------------------------------------------------------

OPTIONS = {"A": "The man is running", "B": "The man is walking", "C": "The man is sitting", "D": "The man is dancing"}

PARSE_CASES = [
    ("B", "B"),
    ("(B)", "B"),
    ("B.", "B"),
    ("b", "B"),
    ("  **C**  ", "C"),
    ("Answer: B", "B"),
    ("answer: c", "C"),
    ("**Answer:** D", "D"),
    ("Final answer: **B**", "B"),
    ("The answer is (C).", "C"),
    ("The answer is B. I hope this helps!", "B"),
    ("Answer:\n\nC", "C"),
    ("### Final answer\n(D) The man is dancing", "D"),
    ("B) The man is walking", "B"),
    ("B: The man is running", "B"),  # the letter wins over contradicting text
    ("B. Option A shows a similar scene, but the man walks.", "B"),
    ("Choice c.", "C"),
    ("\\boxed{C}", "C"),
    ("I'd pick D.", "D"),
    ("The man is walking.", "B"),  # the option text alone
    ("the man WALKS!", "B"),  # case, punctuation and inflection
    ("He is running.", "A"),  # only the words that tell the options apart
    ("The man is dancing rather than sitting.", "D"),
    ("The man is walking, not running.", "B"),
    ("The man is not running; he is walking.", "B"),
    ("I think it's B, not A.", "B"),
    ("A is wrong, B is correct.", "B"),
    ("Initially I thought A, but it is C.", "C"),
    ("Neither A nor B; the answer is C.", "C"),
    ("Option A is wrong. Option C is wrong.\nSo the answer is option D.", "D"),
    # Adversarial: the article "A" is no option letter.
    ("A man is sitting on a bench.", "C"),
    ("Answer: A man is walking", "B"),
    # The final answer wins over options discussed earlier.
    ("The man could be running (A) or walking (B).\nAnswer: B", "B"),
    ("A man is walking in the park.\nAnswer: (C)", "C"),
    ("Let me think.\nA) running\nB) walking\nThe video shows the man moving slowly, so B.", "B"),
    # Ambiguous or absent conclusions.
    ("A or B", None),
    ("The answer is A or B.", None),
    ("B and D", None),
    ("It is either A or B.", None),
    ("(A) The man is running (B) The man is walking", None),
    ("He runs and then walks.", None),
    ("The man is dancing or walking.", None),
    ("Both A and C are plausible.", None),
    ("Hmm, hard to tell.", None),
    ("Answer: E", None),  # not an option here
    ("", None),
    ("   \n  ", None),
    (None, None),
]


@pytest.mark.parametrize(("answer", "expected"), PARSE_CASES)
def test_parse_choice(answer, expected):
    assert parse_choice(answer, OPTIONS) == expected


SPEED = {
    "A": "The video is played in reverse",
    "B": "The video is played normally",
    "C": "The video is played in slow motion",
    "D": "The video is sped up",
}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("It is played in reverse.", "A"),
        ("The footage is reversed.", "A"),
        ("Normal speed.", "B"),
        ("slow motion", "C"),
        ("The video is not in slow motion; it is played normally.", "B"),
        ("It is sped up, not slowed down.", "D"),
        ("Either slow motion or sped up.", None),
    ],
)
def test_parse_choice_speed_options(answer, expected):
    assert parse_choice(answer, SPEED) == expected


def test_parse_choice_option_forms():
    five = ["forward", "in reverse", "slow motion", "sped up", "looped"]
    assert parse_choice("E", five) == "E"
    assert parse_choice("The clip is played in reverse.", five) == "B"
    assert parse_choice("(b)", {"a": "x", "b": "y"}) == "B"  # lower-case keys
    # A mention of a shorter option inside a longer one counts as the longer.
    nested = ["walking", "walking slowly", "running"]
    assert parse_choice("He is walking slowly.", nested) == "B"
    assert parse_choice("walking", nested) == "A"
    # Options made of the same words in another order.
    order = {"A": "left to right", "B": "right to left"}
    assert parse_choice("The car moves from left to right.", order) == "A"
    assert parse_choice("It moves right to left, not left to right.", order) == "B"
    assert parse_choice("left", order) is None
    with pytest.raises(ValueError):
        parse_choice("A", {"A": "x", "a": "y"})


def test_parse_choice_is_bounded_on_long_answers():
    answer = "The man moves. " * 5000 + "\nAnswer: (C)"
    assert parse_choice(answer, OPTIONS) == "C"
    one_line = "Option A or B? (A) and (B) differ. " * 2000 + "So the man is walking, B."
    assert parse_choice(one_line, OPTIONS) == "B"
    assert parse_choice("B. " + "The man walks, unlike in option A and C. " * 2000, OPTIONS) == "B"


def test_multiple_choice_metrics_by_hand():
    options = [OPTIONS, ["left", "right"], ["yes", "no"], OPTIONS, ["left", "right"]]
    answers = ["Answer: B", "It moves right.", "I cannot tell whether yes or no.", "A or C", None]
    references = ["B", "(A)", "yes", "The man is sitting", 1]
    m = multiple_choice_metrics(answers, options, references)
    assert m["choices"] == ["B", "B", None, None, None]
    assert m["accuracy"] == pytest.approx(1 / 5)
    assert m["unparsed_rate"] == pytest.approx(3 / 5) and m["parse_rate"] == pytest.approx(2 / 5)
    assert m["choice_distribution"] == {"B": 1.0}
    assert m["num_examples"] == 5
    json_safe(m)
    assert multiple_choice_metrics([], [], [])["accuracy"] is None
    with pytest.raises(ValueError):
        multiple_choice_metrics(["A"], [["x", "y"]], ["something else"])


# ---------------------------------------------------------------------------------------------------------------
# Yield and per-task dispatch
# ---------------------------------------------------------------------------------------------------------------


def test_yield_metric():
    assert yield_metric([True, False, True, True]) == 0.75
    assert yield_metric([]) is None


def test_task_metrics_action_recognition_from_score_answers():
    task = get_task("action_recognition", classes=["abseiling", "rock climbing", "juggling balls"])
    rows = [
        {"id": "1", "label": "abseiling"},
        {"id": "2", "label": "abseiling"},
        {"id": "3", "label": "rock climbing"},
        {"id": "4", "label": "juggling balls"},
    ]
    answers = {
        "1": "The person descends a rope.\nAnswer: abseiling",
        "2": "Answer: rock climbing",
        "3": "I really cannot tell what is happening.",
        "4": "Answer: juggling balls",
    }
    predictions = score_answers(rows, answers, task)["predictions"]
    m = task_metrics("action_recognition", predictions)
    assert m["accuracy"] == m["verifier_yield"] == 0.5
    assert m["per_class_accuracy"] == {"abseiling": 0.5, "juggling balls": 1.0, "rock climbing": 0.0}
    assert m["confusions"] == [{"label": "abseiling", "prediction": "rock climbing", "count": 1}]
    assert m["unparsed_rate"] == 0.25
    assert m["num_examples"] == 4
    json_safe(m)


def test_task_metrics_shapes_and_unknown_task():
    predictions = [
        {
            "label": {"label": "red square moving left"},
            "prediction": {"label": "red square moving left"},
            "correct": 1,
        },
        {"label": {"label": "red square moving left"}, "prediction": {"label": None}, "correct": False},
        {"label": {"label": "blue square moving up"}, "prediction": {"label": "red square moving up"}, "correct": 0},
    ]
    m = task_metrics("shapes", predictions)
    assert m["accuracy"] == pytest.approx(1 / 3) and m["verifier_yield"] == pytest.approx(1 / 3)
    assert m["per_class_accuracy"] == {"blue square moving up": 0.0, "red square moving left": 0.5}
    assert m["unparsed_rate"] == pytest.approx(1 / 3)
    assert task_metrics("captioning", predictions) == {
        "accuracy": pytest.approx(1 / 3),
        "verifier_yield": pytest.approx(1 / 3),
        "num_examples": 3,
    }
    assert task_metrics("shapes", [])["accuracy"] is None


def test_task_metrics_multiple_choice_from_score_answers():
    task = get_task("multiple_choice")
    rows = [
        {"id": "1", "question": "Where does it move?", "options": ["left", "right"], "answer": "B"},
        {"id": "2", "question": "What colour?", "options": ["red", "blue", "green"], "answer": "red"},
        {"id": "3", "question": "How many?", "options": ["one", "two"], "answer": 1},
    ]
    answers = {"1": "It goes right.\nAnswer: (B)", "2": "Answer: B", "3": "Answer: A or B"}
    results = score_answers(rows, answers, task)
    assert [p["prediction"]["answer"] for p in results["predictions"]] == ["B", "B", None]
    m = results["metrics"]
    assert m["accuracy"] == m["verifier_yield"] == pytest.approx(1 / 3)
    assert m["unparsed_rate"] == pytest.approx(1 / 3) and m["choice_distribution"] == {"B": 1.0}
    assert "choices" not in m and m["num_examples"] == 3
    json_safe(m)


def test_task_metrics_generic_per_field():
    task = get_task(
        "generic",
        fields=[
            {"column": "label", "kind": "categorical", "classes": ["omelette", "pancake"]},
            {"column": "score", "kind": "numeric", "tolerance": 0.1},
            {"column": "steps", "kind": "sequence"},
        ],
    )
    rows = [
        {"id": "1", "label": "omelette", "score": 0.8, "steps": ["crack eggs", "whisk", "fry"]},
        {"id": "2", "label": "pancake", "score": 0.4, "steps": ["mix batter", "flip"]},
        {"id": "3", "label": "omelette", "score": 0.6, "steps": ["crack eggs", "fry"]},
    ]
    answers = {
        "1": "Answer: label: omelette. score: 0.8. steps: crack eggs, whisk, fry",
        "2": "Answer: label: omelette. score: 0.5. steps: flip, mix batter",
        "3": "I cannot tell.",
    }
    m = score_answers(rows, answers, task)["metrics"]
    assert m["accuracy"] == pytest.approx(1 / 3)
    assert m["label/per_class_accuracy"] == {"omelette": 0.5, "pancake": 0.0}
    assert m["label/confusions"] == [{"label": "pancake", "prediction": "omelette", "count": 1}]
    assert m["score/mae"] == pytest.approx(0.05) and m["score/parse_rate"] == pytest.approx(2 / 3)
    assert m["steps/sequence_accuracy"] == pytest.approx(1 / 3)
    json_safe(m)


def test_task_metrics_action_quality_from_score_answers():
    task = get_task("action_quality")
    first = {"action_type": "407c", "difficulty": 3.2, "dive_score": 65.6, "sub_actions": SEQ}
    second = {"action_type": "205b", "difficulty": 3.0, "dive_score": 80.0, "sub_actions": ["Back", "2.5 Soms.Pike"]}
    third = {**first, "dive_score": 50.0}
    rows = [{"id": "a", **first}, {"id": "b", **second}, {"id": "c", **third}]
    answers = {
        "a": "Answer: " + task.label_text(first),
        "b": "Answer: action sequence: Back, 2.5 Soms.Pike. action difficulty: 3.0. final score: 70.0",
        "c": "I cannot judge this dive.",
    }
    predictions = score_answers(rows, answers, task)["predictions"]
    m = task_metrics("action_quality", predictions)
    assert m["accuracy"] == m["verifier_yield"] == pytest.approx(1 / 3)
    assert m["spearman"] == pytest.approx(1.0)  # (65.6, 70) vs (65.6, 80)
    assert m["score_mae"] == pytest.approx(5.0)
    assert m["relative_l2"] == pytest.approx(100 * (10 / 30) ** 2 / 2)  # range of all true scores: 80 - 50
    assert m["difficulty_mae"] == pytest.approx(0.0)
    assert m["sequence_accuracy"] == pytest.approx(2 / 3)
    assert m["score_parse_rate"] == m["parse_rate"] == pytest.approx(2 / 3)
    # The unparsed third dive is imputed with the mean prediction 67.8: ranks (1, 3, 2) vs (2, 3, 1).
    assert m["spearman_with_unparsed_as_mean"] == pytest.approx(0.5)
    json_safe(m)


# ---------------------------------------------------------------------------------------------------------------
# The `evaluate` modules, loaded from their local paths without network
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch):
    import evaluate

    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)
    return evaluate


def test_evaluate_modules_load_from_local_paths(offline, tmp_path):
    evaluate = offline
    assert sorted(p.name for p in MODULES_DIR.iterdir() if p.is_dir() and p.name.startswith("vstar_")) == sorted(
        METRIC_MODULES
    )
    recognition = evaluate.load(str(MODULES_DIR / "vstar_action_recognition"), cache_dir=str(tmp_path))
    m = recognition.compute(predictions=["run", None, "walk", "walk"], references=["run", "run", "run", "walk"])
    assert m == classification_metrics(["run", None, "walk", "walk"], ["run", "run", "run", "walk"])
    m = recognition.compute(predictions=["run", "jog"], references=["run", "run"], correct=[True, True])
    assert m["accuracy"] == 1.0

    quality = load_metric("action_quality", cache_dir=str(tmp_path))
    m = quality.compute(predictions=[60.0, None, 80.0, 70.0], references=[50.0, 90.0, 70.0, 80.0])
    assert m["spearman"] == pytest.approx(0.5) and m["score_parse_rate"] == 0.75
    predictions = [
        {"dive_score": 60.0, "difficulty": 3.0, "sub_actions": SEQ},
        {"dive_score": None, "difficulty": None, "sub_actions": None},
        {"dive_score": 80.0, "difficulty": 3.2, "sub_actions": ["Inward", "3.5 Soms.Tuck"]},
    ]
    references = [{"dive_score": s, "difficulty": 3.2, "sub_actions": SEQ} for s in (50.0, 90.0, 70.0)]
    m = quality.compute(predictions=predictions, references=references, score_range=(0, 100))
    assert m["relative_l2"] == pytest.approx(100 * (0.01 + 0.01) / 2)
    assert m["sequence_accuracy"] == pytest.approx(1 / 3) and m["difficulty_mae"] == pytest.approx(0.1)
    json_safe(m)

    choice = evaluate.load(str(MODULES_DIR / "vstar_multiple_choice" / "vstar_multiple_choice.py"))
    m = choice.compute(
        predictions=["The clip plays in reverse.\nAnswer: (B)", None, "forward"],
        references=["B", "A", "A"],
        options=[["forward", "reverse"], ["x", "y"], ["forward", "reverse"]],
    )
    assert m["accuracy"] == pytest.approx(2 / 3) and m["choices"] == ["B", None, "A"]
    with pytest.raises(KeyError, match="known metrics"):
        load_metric("bleu")
