"""Property-based tests: any string gets a verdict, without an exception, in bounded time.

Run: `PYTHONPATH=src python -m pytest tests/verify/test_verify_properties.py -q`
"""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vstar.tasks import get_task
from vstar.verify import CategoricalVerifier, NumericVerifier, SequenceVerifier, extract_conclusion, find_numbers
from vstar.verify.base import Verdict

CLASSES = [
    "abseiling",
    "rock climbing",
    "playing guitar",
    "playing bass guitar",
    "petting animal (not cat)",
    "petting cat",
    "throwing ball (not baseball or American football)",
    "trimming or shaving beard",
    "passing American football (in game)",
    "passing American football (not in game)",
    "situp",
]
AR_LABEL = {"label": "petting animal (not cat)"}
AQ_LABEL = {
    "action_type": "5253b",
    "difficulty": 3.2,
    "dive_score": 75.2,
    "sub_actions": ["Back", "1.5 Twists", "2.5 Soms.Pike", "Entry"],
}
# A generous bound: a verification normally takes tens of microseconds; this catches hangs and blow-ups.
MAX_SECONDS = 1.0
MAX_SECONDS_HUGE = 3.0

# Words that steer the parsers into their interesting paths.
VOCAB = [
    "Answer:",
    "Final answer:",
    "**Answer**",
    "###",
    "the answer is",
    "not",
    "no",
    "rather than",
    "instead of",
    "or",
    "either",
    "maybe",
    "can't tell",
    "abseiling",
    "rock",
    "climbing",
    "playing",
    "bass",
    "guitar",
    "petting",
    "cat",
    "dog",
    "animal",
    "(not",
    ")",
    "(",
    "3.5",
    "½",
    "3 1/2",
    "three and a half",
    "sixty-five point six",
    "/100",
    "between",
    "and",
    "-",
    "—",
    "score",
    "final score",
    "difficulty",
    "somersaults",
    "Soms.Tuck",
    "twists",
    "pike",
    "tuck",
    "Inward",
    "Back",
    "Arm.Back",
    "Entry",
    ",",
    ".",
    "?",
    "\n",
    "\n\n",
    "  ",
    "*",
    "_",
    "é",
    "ß",
    "🧗",
    "\u200b",
    "\ufeff",
    "Ａｎｓｗｅｒ：",
    "n't",
    "'s",
    "1,000",
    "65,6",
    "%",
    "out of",
    "one",
    "a half",
    "point",
]

sentences = st.lists(st.sampled_from(VOCAB), max_size=60).map(" ".join)
any_text = st.one_of(st.text(max_size=400), sentences, st.binary(max_size=200).map(lambda b: b.decode("latin-1")))


@pytest.fixture(scope="module")
def tasks():
    return {
        "ar": get_task("action_recognition", classes=CLASSES),
        "ar_open": get_task("action_recognition"),
        "aq": get_task("action_quality"),
    }


def check_verdict(verdict: Verdict) -> None:
    assert isinstance(verdict, Verdict)
    assert isinstance(verdict.passed, bool)
    assert verdict.fields
    json.dumps(verdict.to_dict())


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answer=any_text)
def test_any_text_gets_a_verdict(tasks, answer):
    for key, label in (("ar", AR_LABEL), ("ar_open", AR_LABEL), ("aq", AQ_LABEL)):
        verdict, seconds = timed(tasks[key].verify, answer, label)
        check_verdict(verdict)
        assert seconds < MAX_SECONDS, (key, seconds)
    scores, seconds = timed(tasks["aq"].score, answer, AQ_LABEL)
    assert set(scores) == {"action_type", "difficulty", "dive_score", "sub_actions"}
    assert seconds < MAX_SECONDS
    assert tasks["ar"].score(answer, AR_LABEL)["label"] in (None, *CLASSES)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunk=st.one_of(st.text(min_size=1, max_size=50), sentences.filter(bool)), times=st.integers(1000, 40_000))
def test_huge_text_is_bounded(tasks, chunk, times):
    answer = (chunk * times)[:2_000_000]
    for key, label in (("ar", AR_LABEL), ("aq", AQ_LABEL)):
        verdict, seconds = timed(tasks[key].verify, answer, label)
        check_verdict(verdict)
        assert seconds < MAX_SECONDS_HUGE, (key, len(answer), seconds)


ADVERSARIAL = [
    "a" * 1_000_000,
    "(" * 200_000,
    "not " * 200_000,
    "1/" * 200_000,
    "3." * 300_000,
    "Answer: " * 100_000,
    "answer is " * 100_000,
    "\n" * 500_000,
    "- " * 300_000,
    "one and a half " * 50_000,
    "between 1 and " * 50_000,
    "playing " * 100_000 + "guitar",
    "petting " * 50_000 + "cat " * 50_000,
    "score " * 100_000 + "65.6",
    "3.5 somersaults " * 50_000,
    "*" * 500_000 + "Answer: abseiling",
    "#" * 300_000 + "\n" + "Final answer\n" * 1000,
    "\u0301" * 200_000,
    "🧗" * 200_000,
    "ﷺ" * 100_000,
]


@pytest.mark.parametrize("answer", ADVERSARIAL, ids=lambda a: f"{a[:12]!r}x{len(a)}")
def test_adversarial_inputs_are_fast(tasks, answer):
    for key, label in (("ar", AR_LABEL), ("ar_open", AR_LABEL), ("aq", AQ_LABEL)):
        verdict, seconds = timed(tasks[key].verify, answer, label)
        check_verdict(verdict)
        assert seconds < MAX_SECONDS_HUGE, (key, seconds)


@settings(max_examples=200, deadline=None)
@given(answer=any_text)
def test_building_blocks_never_raise(answer):
    assert isinstance(extract_conclusion(answer), str)
    for number in find_numbers(answer):
        assert number.start <= number.end
    categorical = CategoricalVerifier(CLASSES)
    assert categorical.predict(answer) in (None, *CLASSES)
    assert isinstance(CategoricalVerifier().predict(answer), (str, type(None)))
    assert NumericVerifier().verify_field(answer, 3.2, "x", ["difficulty"]).name == "x"
    assert SequenceVerifier().verify_field(answer, ["Inward", "3.5 Soms.Tuck", "Entry"]).name == "sub_actions"


@settings(max_examples=100, deadline=None)
@given(label=st.text(max_size=80), answer=any_text)
def test_arbitrary_labels_get_a_verdict(label, answer):
    verifier = CategoricalVerifier(CLASSES)
    verdict = verifier.verify_field(answer, label)
    assert verdict.name == "label" and isinstance(verdict.passed, bool)


@settings(max_examples=100, deadline=None)
@given(label=st.sampled_from(CLASSES), filler=st.text(max_size=200))
def test_designated_label_is_accepted(label, filler):
    # Whatever reasoning precedes it, a final answer line naming exactly the label passes.
    filler = filler.replace("\r", " ").replace("\n", " ")
    answer = f"Notes: {filler}\nAnswer: {label}"
    assert CategoricalVerifier(CLASSES).verify_field(answer, label).passed
