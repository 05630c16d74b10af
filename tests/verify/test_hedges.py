"""Hedged answers, verifier by verifier: a conclusion that offers alternatives fails with reason `hedged`.

Run: `python -m pytest tests/verify/test_hedges.py -q`
"""

from __future__ import annotations

import pytest

from vstar.verify import CategoricalVerifier, CompositeVerifier, NumericVerifier, SequenceVerifier
from vstar.verify.answer import find_conclusion

CLIMBING = ["abseiling", "rock climbing", "ice climbing", "climbing tree"]
DIVE = ["Back", "1.5 Twists", "2.5 Soms.Pike", "Entry"]


@pytest.mark.parametrize(
    "answer",
    [
        "Answer: abseiling (or possibly rock climbing)",
        "Answer: abseiling. A second possibility is rock climbing.",
        "Answer: most likely abseiling, though it could also be ice climbing.",
        "Answer: abseiling\nAlternatively, it could be rock climbing if the person is going up.",
        "Answer: abseiling, with rock climbing as a second guess.",
        "The rope runs through a belay device, so it is abseiling. It might also be climbing a tree.",
    ],
)
def test_categorical_hedges(answer):
    verifier = CategoricalVerifier(CLIMBING)
    assert verifier.verify_field(answer, "abseiling").reason == "hedged"
    assert verifier.predict(answer) is None  # scored as unparsed, not as a class


@pytest.mark.parametrize(
    ("answer", "passed"),
    [
        ("Answer: abseiling (also called rappelling)", True),
        ("Answer: abseiling\nRock climbing is ruled out: the person moves down.", True),
        ("Answer: abseiling\nI hope this helps! Let me know if you have another question.", True),
    ],
)
def test_categorical_commitments_stay_accepted(answer, passed):
    verifier = CategoricalVerifier(CLIMBING)
    assert verifier.verify_field(answer, "abseiling").passed is passed
    assert verifier.predict(answer) == "abseiling"


@pytest.mark.parametrize(
    "answer",
    [
        "Answer: final score: 70.5 (or 61.5)",
        "Answer: final score: 70.5; a second estimate: 61.5",
        "Answer: final score: 70.5 (alternatively 61.5)",
        "Answer: final score: 70.5 ± 3",
        "Answer: final score: 70.5\nA second estimate of the final score would be 61.5.",
    ],
)
def test_numeric_hedges(answer):
    verifier = NumericVerifier(rel_tol=0.05)
    assert verifier.verify_field(answer, 70.5, "dive_score", ["final score", "score"]).reason == "hedged"
    assert verifier.parse(answer, ["final score", "score"]) is None


def test_numeric_commitments_stay_accepted():
    verifier = NumericVerifier(rel_tol=0.05)
    for answer in (
        "Answer: final score: 70.5 (judges: 8.0, 7.5, 8.0)",
        "Answer: final score: 70.5, not 61.5",
        "Answer: final score: 70.5\nThe second somersault was slightly open.",
    ):
        assert verifier.verify_field(answer, 70.5, "dive_score", ["final score", "score"]).passed, answer


@pytest.mark.parametrize(
    "answer",
    [
        "Answer: Back, 1.5 Twists, 2.5 Soms.Pike or 2.5 Soms.Tuck, Entry",
        "Answer: Back (or Reverse), 1.5 Twists, 2.5 Soms.Pike, Entry",
        "Answer: Back, 1.5 or 2.5 Twists, 2.5 Soms.Pike, Entry",
        "Answer: a back dive with one and a half twists and two and a half somersaults, pike or tuck",
    ],
)
def test_sequence_hedges(answer):
    verifier = SequenceVerifier()
    assert verifier.verify_field(answer, DIVE).reason == "hedged"
    assert verifier.parse(answer) is None


def test_sequence_commitment_with_rejected_groups_is_accepted():
    answer = "The diver faces the board, not forward or inward.\nAnswer: Back, 1.5 Twists, 2.5 Soms.Pike, Entry"
    assert SequenceVerifier().verify_field(answer, DIVE).passed


def test_composite_rejects_a_second_answer_after_the_conclusion():
    numbers = NumericVerifier(rel_tol=0.05)
    composite = CompositeVerifier(
        {
            "sub_actions": lambda answer, value: SequenceVerifier().verify_field(answer, value),
            "dive_score": lambda answer, value: numbers.verify_field(answer, value, "dive_score", ["score"]),
        }
    )
    label = {"sub_actions": DIVE, "dive_score": 70.5}
    first = "Answer: action sequence: Back, 1.5 Twists, 2.5 Soms.Pike, Entry. final score: 70.5"
    assert composite.verify(first, label).passed
    second = first + "\nAlternatively: action sequence: Back, 2.5 Soms.Pike, Entry. final score: 61.5"
    verdict = composite.verify(second, label)
    assert not verdict.passed and {f.reason for f in verdict.fields.values()} == {"hedged"}
    # A field that found the hedge itself names it; the others keep their own verdicts.
    verdict = composite.verify(first.replace("70.5", "70.5 (or 61.5)"), label)
    assert (verdict.fields["sub_actions"].passed, verdict.fields["dive_score"].reason) == (True, "hedged")


def test_conclusion_keeps_what_follows_it():
    conclusion = find_conclusion("Reasoning.\nAnswer: abseiling\nA second guess: rock climbing.\nThanks for asking!")
    assert (conclusion.text, conclusion.after) == ("abseiling", "A second guess: rock climbing.")
    conclusion = find_conclusion("It moves slowly, which suggests tai chi. Alternatively, it could be yoga.")
    assert conclusion.text == "It moves slowly, which suggests tai chi." and conclusion.after.startswith("Altern")


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("He speeds up.\nAnswer: B", "match"),
        ("Answer: B or C", "hedged"),
        ("Answer: B\nAlternatively, C.", "hedged"),
        ("Answer: B\nA second guess would be option A.", "hedged"),
        ("Answer: B\nAlternatively, it could be that the man swims.", "hedged"),
        ("Answer: B\nI hope this helps.", "match"),
    ],
)
def test_choice_hedges(answer, reason):
    from vstar.verify import ChoiceVerifier

    options = {"A": "The man walks", "B": "The man runs", "C": "The man swims"}
    assert ChoiceVerifier().verify_field(answer, "B", options).reason == reason
