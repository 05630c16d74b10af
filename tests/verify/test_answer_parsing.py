"""Conclusion extraction, normalisation, negation/hedge helpers and number parsing.

Run: `PYTHONPATH=src python -m pytest tests/verify/test_answer_parsing.py -q`
"""

from __future__ import annotations

import pytest

from vstar.verify.answer import (
    extract_conclusion,
    find_conclusion,
    find_numbers,
    is_negated,
    is_noncommittal,
    normalize_text,
    parse_number,
    stem,
)
from vstar.verify.numeric import NumericVerifier
from vstar.verify.sequence import SequenceVerifier, parse_items


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("The rope is clipped to a harness.\nAnswer: abseiling", "abseiling"),
        ("Reasoning...\nFinal answer: rock climbing\nI hope this helps!", "rock climbing"),
        ("**Answer:** playing guitar", "playing guitar"),
        ("**Final Answer: playing guitar**", "playing guitar"),
        ("### Final answer\n\nPlaying guitar\n\nMore notes below.", "Playing guitar"),
        ("Answer: abseiling\nWait, no.\nFinal answer: rock climbing", "rock climbing"),
        ("The rope goes down. So the answer is abseiling. Hope this helps.", "So the answer is abseiling."),
        (
            "A man uses a rope. In conclusion he is abseiling. The rope is 3.5 m long.",
            "In conclusion he is abseiling.",
        ),
        ("He is on a rope. He goes down.", "He goes down."),
        ("First sentence. Is it climbing?", "First sentence."),
        ("", ""),
        ("   \n\n  ", ""),
    ],
)
def test_extract_conclusion(answer, expected):
    assert extract_conclusion(answer) == expected


def test_inline_marker_keeps_negation_of_its_sentence():
    assert extract_conclusion("I looked closely. I don't think the answer is abseiling.") == (
        "I don't think the answer is abseiling."
    )


def test_designated_conclusion_falls_back_to_earlier_sentences():
    conclusion = find_conclusion("The person is abseiling down a cliff. The rope is red.\nAnswer: see above")
    assert conclusion.designated and conclusion.text == "see above"
    assert conclusion.earlier()[0].startswith("The rope is red")


def test_extract_conclusion_accepts_non_strings():
    assert extract_conclusion(None) == ""
    assert extract_conclusion(42) == "42"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("It isn't Abseiling", "it is not abseiling"),
        ("Ice-Skating", "ice skating"),
        ("ＡＢＳＥＩＬＩＮＧ", "abseiling"),
        ("Café", "cafe"),
        ("3.5 Soms.Tuck", "3.5 soms tuck"),
        ("the driver's seat", "the driver seat"),
        ("not rock climbing — abseiling", "not rock climbing , abseiling"),
    ],
)
def test_normalize_text(text, expected):
    assert normalize_text(text) == expected


@pytest.mark.parametrize(
    ("words", "same"),
    [
        (["playing", "plays", "played", "play"], True),
        (["dancing", "dance", "dances"], True),
        (["running", "run", "runs", "ran"], True),
        (["babies", "baby"], True),
        (["colour", "color"], True),
        (["barbequing", "barbecuing"], True),
        (["passing", "pass"], True),
        (["swimming", "swim", "swam"], True),
        (["skiing", "ski"], True),
        (["guitar", "guitars"], True),
        (["cat", "car"], False),
    ],
)
def test_stem_maps_inflections_together(words, same):
    stems = {stem(w) for w in words}
    assert (len(stems) == 1) is same, stems


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("65.6", [65.6]),
        ("three and a half somersaults", [3.5]),
        ("3½ somersaults", [3.5]),
        ("3 1/2 somersaults", [3.5]),
        ("sixty-five point six", [65.6]),
        ("eighty eight", [88.0]),
        ("one hundred and five", [105.0]),
        ("a half twist", [0.5]),
        ("one and a half twists", [1.5]),
        ("one twist", [1.0]),
        ("the one on the left scored 7", [7.0]),
        ("1,000 points", [1000.0]),
        ("twenty one", [21.0]),
        ("no numbers here", []),
    ],
)
def test_find_numbers_values(text, values):
    assert [n.value for n in find_numbers(text) if n.kind == "value"] == pytest.approx(values)


def test_find_numbers_kinds():
    kinds = lambda text: [(n.value, n.kind) for n in find_numbers(text)]  # noqa: E731
    assert kinds("65.6/100") == [(65.6, "value"), (100.0, "denominator")]
    assert kinds("65.6 out of 100") == [(65.6, "value"), (100.0, "denominator")]
    assert kinds("between 60 and 70") == [(60.0, "range"), (70.0, "range")]
    assert kinds("60-70") == [(60.0, "range"), (70.0, "range")]
    assert kinds("65 or 70") == [(65.0, "alternative"), (70.0, "alternative")]
    assert kinds("88, but maybe 80") == [(88.0, "alternative"), (80.0, "alternative")]
    assert kinds("difficulty 3.2 and score 65.6") == [(3.2, "value"), (65.6, "value")]
    assert kinds("5%") == [(5.0, "percent")]


def test_parse_number():
    assert parse_number("Answer: 3½") == 3.5
    assert parse_number("between 3 and 4") is None
    assert parse_number("3 or 4") is None
    assert parse_number("nothing") is None


@pytest.mark.parametrize(
    ("text", "mention", "negated"),
    [
        ("this is not abseiling", "abseiling", True),
        ("rather than abseiling, it is rock climbing", "abseiling", True),
        ("rather than abseiling, it is rock climbing", "rock climbing", False),
        ("it is rock climbing rather than abseiling", "abseiling", True),
        ("it is rock climbing rather than abseiling", "rock climbing", False),
        ("not abseiling but rock climbing", "rock climbing", False),
        ("abseiling is ruled out", "abseiling", True),
        ("abseiling can be ruled out", "abseiling", True),
        ("it looks more like rock climbing than abseiling", "abseiling", True),
        ("there is no doubt it is abseiling", "abseiling", False),
        ("i am not sure, but it is abseiling", "abseiling", False),
        ("the man is abseiling and not climbing", "abseiling", False),
        ("it is similar to rock climbing", "rock climbing", True),
        ("neither abseiling nor climbing", "abseiling", True),
    ],
)
def test_is_negated(text, mention, negated):
    norm = normalize_text(text)
    start = norm.index(mention)
    assert is_negated(norm, start, start + len(mention)) is negated


@pytest.mark.parametrize(
    ("text", "noncommittal"),
    [
        ("i can not tell what the activity is", True),
        ("it is either abseiling or rock climbing", True),
        ("abseiling or something similar", True),
        ("i am not sure, but i think it is abseiling", False),
        ("probably abseiling", False),
        ("abseiling", False),
    ],
)
def test_is_noncommittal(text, noncommittal):
    assert is_noncommittal(normalize_text(text)) is noncommittal


class TestNumericVerifier:
    verifier = NumericVerifier(rel_tol=0.05, exclude_prefixes=("difficulty", "judge"))
    keywords = ("final score", "score", "points")

    @pytest.mark.parametrize(
        ("answer", "reason"),
        [
            ("Answer: final score 65.6", "match"),
            ("Answer: final score 68", "match"),
            ("Answer: final score 70", "out_of_tolerance"),
            ("Answer: final score between 60 and 70", "hedged"),
            ("Answer: final score 65 or 70", "hedged"),
            ("Answer: the dive was great", "no_value"),
            ("", "no_value"),
            ("Judge scores 8.5, 9.0, 8.5. Difficulty score 3.2. Final score: sixty-five point six.", "match"),
            ("A perfect dive gets 100 points.\nAnswer: final score 40", "out_of_tolerance"),
            ("The score is not 70 but 65.6.", "match"),
            ("Answer: final score 65.6. On reflection the final score is 72.", "conflict"),
        ],
    )
    def test_reasons(self, answer, reason):
        assert self.verifier.verify_field(answer, 65.6, "dive_score", self.keywords).reason == reason

    def test_parse(self):
        assert self.verifier.parse("Answer: 65.6/100", self.keywords) == 65.6
        assert self.verifier.parse("Answer: score 60 to 70", self.keywords) is None
        assert self.verifier.parse("no number") is None

    def test_absolute_tolerance(self):
        difficulty = NumericVerifier(rel_tol=None, abs_tol=0.05)
        assert difficulty.verify_field("difficulty: 3.2", 3.2, "difficulty", ["difficulty"]).passed
        assert not difficulty.verify_field("difficulty: 3.4", 3.2, "difficulty", ["difficulty"]).passed

    def test_bad_label_is_a_verdict(self):
        assert self.verifier.verify_field("Answer: 3", "n/a", "x").reason == "bad_label"
        assert self.verifier.verify_field("Answer: 3", float("nan"), "x").reason == "bad_label"


class TestSequence:
    @pytest.mark.parametrize(
        ("text", "names"),
        [
            ("Inward, 3.5 Soms.Tuck, Entry", ["Inward", "3.5 Soms.Tuck", "Entry"]),
            ("three and a half somersaults in the tuck position", ["3.5 Soms.Tuck"]),
            ("3.5 somersaults tuck", ["3.5 Soms.Tuck"]),
            ("armstand back with one and a half twists", ["Arm.Back", "1.5 Twists"]),
            ("a reverse half somersault piked", ["Reverse", "0.5 Som.Pike"]),
            ("double somersault in layout", ["2 Soms.Straight"]),
            ("3.5 somersaults in pike or tuck", ["3.5 Soms.?"]),
        ],
    )
    def test_parse_items(self, text, names):
        from vstar.verify.sequence import item_name

        assert [item_name(x) for x in parse_items(text)] == names

    def test_order_matters_and_entry_is_optional(self):
        seq = SequenceVerifier()
        label = ["Back", "1.5 Twists", "2.5 Soms.Pike", "Entry"]
        assert seq.verify_field("Answer: back, 1.5 twists, 2.5 somersaults pike", label).passed
        assert seq.verify_field("Answer: back, 2.5 somersaults pike, 1.5 twists", label).reason == "order"
        strict = SequenceVerifier(optional_last=())
        assert not strict.verify_field("Answer: back, 1.5 twists, 2.5 somersaults pike", label).passed
