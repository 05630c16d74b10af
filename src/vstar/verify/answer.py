"""Reading a model's answer: its conclusion, its words and its numbers.

Verifiers judge the conclusion of an answer, not every word of it. This module finds that conclusion (a
designated final-answer line such as `Answer: ...`, else the last conclusive sentence), normalises text so
that honest paraphrases compare equal (case, unicode, hyphens, British/American spelling, plurals and
inflections), tells negated or rejected mentions from asserted ones, and parses numbers written as digits,
words or fractions.

Every function takes any string and returns in time linear in a bounded prefix/suffix of it: answers are
truncated before any regex runs, and the regexes have no nested quantifiers.

```python
from vstar.verify.answer import extract_conclusion, find_numbers
extract_conclusion("The rope is clipped to a harness.\\nAnswer: abseiling")  # 'abseiling'
[n.value for n in find_numbers("three and a half somersaults, score 65.6/100")]  # [3.5, 65.6, 100.0]
```
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache

# Conclusions sit at the end of an answer, so a huge answer is cut to its tail before anything else runs.
MAX_ANSWER_CHARS = 6000
# A designated conclusion longer than this is reasoning, not an answer line.
MAX_CONCLUSION_CHARS = 800
# How many sentences before the last one may hold the conclusion ("... so it is X. The rope shows this.").
MAX_BACKTRACK_SENTENCES = 3


def bound_text(text: object) -> str:
    """Any object as a string of at most `MAX_ANSWER_CHARS` characters (its tail, where conclusions are)."""
    if text is None:
        return ""
    if not isinstance(text, str):
        text = str(text)
    if len(text) > MAX_ANSWER_CHARS:
        text = text[-MAX_ANSWER_CHARS:]
    return text


# ---------------------------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------------------------

# NFKC turns "3½" into "31⁄2", which reads as thirty-one halves: fractions are spelled out before NFKC.
_VULGAR = {
    "½": " 1/2",
    "⅓": " 1/3",
    "⅔": " 2/3",
    "¼": " 1/4",
    "¾": " 3/4",
    "⅛": " 1/8",
    "⅜": " 3/8",
    "⅝": " 5/8",
    "⅞": " 7/8",
}
_VULGAR_RE = re.compile("[" + "".join(_VULGAR) + "]")
_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "`": "'", "´": "'", "ʼ": "'", "⁄": "/", "∕": "/"})
_CLAUSE_DASH_RE = re.compile(r"\s[\-‐‑‒–—―]+\s|[–—―]")
_DASHES_RE = re.compile(r"[\-‐‑‒–—―_]+")
_NOT_RE = re.compile(r"\b(do|does|did|is|are|was|were|has|have|had|could|would|should|must|need)n't\b")
_CANNOT_RE = re.compile(r"\bcannot\b")
_POSSESSIVE_RE = re.compile(r"'s?\b|\b'")
# Dots inside words ("Soms.Tuck", "Arm.Back") are separators; dots between digits are decimals.
_WORD_DOT_RE = re.compile(r"(?<=[^\W\d])\.(?=[^\W\d])")
_SPACE_RE = re.compile(r"[ \t\r\f\v]+")


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def normalize_text(text: str) -> str:
    """Lowercase, NFKC, no accents, hyphens/dashes as spaces, "n't" as " not", no possessive apostrophes.

    Punctuation that separates clauses (`. , ; : ! ?`) is kept so that negation scopes can be found; dots
    between letters ("Soms.Tuck") become spaces, dots between digits stay decimals.

    Args:
        text: any text (it is bounded first).
    """
    text = bound_text(text)
    if not text:
        return ""
    # Each rewrite runs only when its trigger character is present: this runs on every verification.
    if not text.isascii():
        text = _VULGAR_RE.sub(lambda m: _VULGAR[m.group(0)], text)
        text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES)
        text = _strip_accents(text)
    text = text.lower()
    if "'" in text:
        if "n't" in text:
            text = text.replace("won't", "will not").replace("can't", "can not")
            text = _NOT_RE.sub(lambda m: m.group(1) + " not", text).replace("n't", " not")
        text = _POSSESSIVE_RE.sub("", text)
    if "cannot" in text:
        text = _CANNOT_RE.sub("can not", text)
    if "." in text:
        text = _WORD_DOT_RE.sub(" ", text)
    if "-" in text or "_" in text or not text.isascii():
        # A dash between words with spaces around it separates clauses ("not rock climbing - it is abseiling").
        text = _CLAUSE_DASH_RE.sub(" , ", text)
        text = _DASHES_RE.sub(" ", text)
    return _SPACE_RE.sub(" ", text)


def _pairs(text: str) -> dict[str, str]:
    return dict(pair.split(":") for pair in text.split())


# British spellings (and a few common variants) mapped to one form, applied to single words before stemming.
SPELLING: dict[str, str] = _pairs(
    """
    colour:color colours:colors coloured:colored colouring:coloring grey:gray favourite:favorite
    moustache:mustache tyre:tire tyres:tires aeroplane:airplane aeroplanes:airplanes jewellery:jewelry
    barbeque:barbecue barbequing:barbecuing barbeques:barbecues bbq:barbecue bbqing:barbecuing
    practise:practice practising:practicing organise:organize organising:organizing realise:realize
    recognise:recognize vapourising:vaporizing theatre:theater centre:center metre:meter metres:meters
    litre:liter kerb:curb pyjamas:pajamas cosy:cozy doughnut:donut doughnuts:donuts plough:plow
    ploughing:plowing programme:program catalogue:catalog travelling:traveling travelled:traveled
    cancelled:canceled modelling:modeling labelled:labeled signalling:signaling kayacking:kayaking mum:mom
    maths:math arse:ass aluminium:aluminum sulphur:sulfur defence:defense offence:offense armour:armor
    harbour:harbor neighbour:neighbor behaviour:behavior rumour:rumor humour:humor flavour:flavor
    vapour:vapor odour:odor axe:ax axes:ax rappelling:rappeling rappelled:rappeled headphone:headphones
    """
)

# Irregular forms mapped to their base form, and a few synonyms mapped to one word ("bicycle" -> "bike").
IRREGULAR: dict[str, str] = _pairs(
    """
    ran:run swam:swim swum:swim threw:throw thrown:throw rode:ride ridden:ride ate:eat eaten:eat drove:drive
    driven:drive flew:fly flown:fly dug:dig held:hold sang:sing sung:sing caught:catch taught:teach
    bought:buy brought:bring fought:fight built:build cut:cut hit:hit put:put shot:shoot dove:dive
    dived:dive blew:blow blown:blow drew:draw drawn:draw wore:wear worn:wear woke:wake woken:wake made:make
    took:take taken:take gave:give given:give fell:fall fallen:fall slid:slide swung:swing spun:spin
    tied:tie tying:tie ties:tie lying:lie lied:lie dying:die died:die dyeing:dye dyed:dye knives:knife
    leaves:leaf wolves:wolf shelves:shelf feet:foot teeth:tooth men:man women:woman children:child
    kids:child kid:child people:person persons:person mice:mouse geese:goose oxen:ox dice:die is:is was:was
    has:has does:do this:this his:his its:its us:us bus:bus gas:gas yes:yes news:news series:series
    species:species gymnastics:gymnastic bicycle:bike bicycles:bike bicycling:biking cycling:biking
    puppy:dog puppies:dog kitten:cat kittens:cat kitty:cat infant:baby infants:baby television:tv
    telephone:phone cellphone:phone smartphone:phone
    """
)

_VOWELS = frozenset("aeiouy")
_UNDOUBLE = frozenset("bdgmnprt")


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A light inflection stemmer: plurals, -ing, -ed, final -e, doubled consonants, irregular forms.

    It only has to map the inflections of one word to one key (both class names and answers go through it), not
    to produce dictionary words: "dancing", "dances" and "dance" all give "danc".

    Args:
        word: one lowercase word.
    """
    word = SPELLING.get(word, word)
    if " " in word:
        return " ".join(stem(w) for w in word.split())
    if word in IRREGULAR:
        word = IRREGULAR[word]
        if word in IRREGULAR:
            return word
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith(("sses", "ches", "shes", "xes", "zes")):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    if word.endswith("ing") and len(word) >= 6 and _VOWELS.intersection(word[:-3]):
        word = word[:-3]
        word = _undouble(word)
    elif word.endswith("ied") and len(word) >= 5:
        word = word[:-3] + "y"
    elif word.endswith("ed") and len(word) >= 5 and _VOWELS.intersection(word[:-2]):
        word = word[:-2]
        word = _undouble(word)
    if word.endswith("e") and len(word) >= 4:
        word = word[:-1]
    return word


def _undouble(word: str) -> str:
    if len(word) >= 3 and word[-1] == word[-2] and word[-1] in _UNDOUBLE:
        return word[:-1]
    return word


# ---------------------------------------------------------------------------------------------------------------
# Conclusions
# ---------------------------------------------------------------------------------------------------------------

_MARK_WORDS = r"(?:final\s+)?(?:answer|prediction|verdict|label|conclusion|classification|result)"
_MARKER_KEYS = ("answer", "prediction", "verdict", "label", "conclusion", "classification", "result")
# A marker at the start of a line: "Answer: x", "**Final Answer:** x", "### Final answer" (content on later lines).
_LINE_MARKER_RE = re.compile(
    r"(?im)^[ \t>#*_\-\d.)]*(?:my\s+|the\s+)?" + _MARK_WORDS + r"[ \t*_]*(?:[:=\-–—][ \t*_]*|$)"
)
# An inline marker: "..., so the answer is x", "Final answer: x" in mid-line.
_INLINE_MARKER_RE = re.compile(
    r"(?i)\b(?:(?:final\s+answer|answer|final\s+prediction|prediction)[ \t*_]*[:=][ \t*_]*"
    r"|(?:the|my|final|correct)\s+(?:final\s+|correct\s+)?answer\s+(?:is|would\s+be|should\s+be|must\s+be|will\s+be)\b)"
)
# Sentence ends: punctuation followed by space or end, or a line break. A dot between digits is a decimal.
_SENTENCE_END_RE = re.compile(r"[.!?]+(?=\s|$)|\n")
_HAS_WORD_RE = re.compile(r"[^\W_]")
_PLEASANTRY_RE = re.compile(
    r"(?i)^\W*(?:i\s+hope|hope\s+this|let\s+me\s+know|feel\s+free|thanks?\b|thank\s+you|is\s+there\s+anything|"
    r"please\s+let|if\s+you\s+have|good\s+luck)"
)
_CONCLUSIVE_RE = re.compile(
    r"(?i)\b(?:therefore|thus|hence|so|consequently|in\s+conclusion|to\s+conclude|in\s+summary|to\s+summari[sz]e|"
    r"overall|in\s+short|all\s+in\s+all|this\s+(?:is|means|indicates|suggests|shows)|the\s+(?:person|man|woman|"
    r"people|activity|action)\s+(?:is|are))\b"
)


@dataclass
class Conclusion:
    """Where an answer concludes.

    Args:
        text: the conclusion (the designated answer, else the last conclusive sentence); "" if none.
        designated: whether it came from a final-answer marker.
        whole: the bounded answer text.
        after: what the answer says after its conclusion (pleasantries dropped), where a second answer may be
            offered ("Answer: 70.5\nA second estimate would be 61.5").
    """

    text: str
    designated: bool = False
    whole: str = ""
    _earlier: list[str] | None = field(default=None, repr=False)
    after: str = ""

    def earlier(self) -> list[str]:
        """Sentences before the conclusion, nearest first, to fall back on when it states nothing usable."""
        if self._earlier is None:
            self._earlier = _tail_sentences(split_sentences(self.whole), self.text) if self.text else []
        return self._earlier


def split_sentences(text: str) -> list[str]:
    """Sentences and lines of a text, stripped, empty ones dropped.

    Args:
        text: any text.
    """
    out: list[str] = []
    start = 0
    for m in _SENTENCE_END_RE.finditer(text):
        piece = text[start : m.end()].strip()
        if piece and _HAS_WORD_RE.search(piece):
            out.append(piece)
        start = m.end()
    piece = text[start:].strip()
    if piece and _HAS_WORD_RE.search(piece):
        out.append(piece)
    return out


def _designated(text: str) -> tuple[str, int] | None:
    """The content of the last final-answer marker and where it ends, or None."""
    # Regexes run only around occurrences of marker words, last first: most answers have one, at the end.
    low = text.lower()
    hits: list[int] = []
    for word in _MARKER_KEYS:
        p = low.rfind(word)
        while p >= 0 and len(hits) < 64:
            hits.append(p)
            p = low.rfind(word, 0, p)
    best_line: re.Match[str] | None = None
    best_inline: re.Match[str] | None = None
    for p in sorted(hits, reverse=True)[:16]:
        line = _LINE_MARKER_RE.match(text, text.rfind("\n", 0, p) + 1)
        if line is not None and line.end() > p:
            best_line = line
            break
        inline = _INLINE_MARKER_RE.search(text, max(0, p - 30), p + 40)
        if inline is not None and inline.start() <= p < inline.end():
            best_inline = inline
            break
    if best_line is None and best_inline is None:
        return None
    if best_inline is not None:
        # Inline markers keep their whole sentence, so "I don't think the answer is X" stays negated.
        lo = max(0, best_inline.start() - MAX_CONCLUSION_CHARS)
        start = lo
        for b in _SENTENCE_END_RE.finditer(text, lo, best_inline.start()):
            start = b.end()
        stop = _SENTENCE_END_RE.search(text, best_inline.end())
        end = stop.end() if stop is not None else len(text)
        return text[start:end].strip()[:MAX_CONCLUSION_CHARS], end
    assert best_line is not None
    end = text.find("\n", best_line.end())
    if best_line.group(0).endswith("\n"):
        end = best_line.end() - 1
    line = text[best_line.end() : end if end >= 0 else len(text)].strip(" \t*_")
    if line.strip():
        return line.strip()[:MAX_CONCLUSION_CHARS], end if end >= 0 else len(text)
    # A heading-like marker ("### Final answer"): the content is the following lines up to a blank line.
    lines: list[str] = []
    position = end + 1 if end >= 0 else len(text)
    for raw in text[end + 1 :].split("\n", 8)[:8] if end >= 0 else []:
        if not raw.strip():
            if lines:
                break
            position += len(raw) + 1
            continue
        lines.append(raw.strip(" \t*_-"))
        position += len(raw) + 1
    return ("\n".join(lines)[:MAX_CONCLUSION_CHARS] if lines else ""), min(position, len(text))


# Tails tried in turn: the conclusion and the few sentences before it are usually in the first one.
_TAIL_CHARS = (500, 1500)


def find_conclusion(answer: object) -> Conclusion:
    """The conclusion of an answer, with earlier sentences to fall back on.

    A designated final answer ("Answer: ...", "Final answer: ...", "**Answer**: ...", "The answer is ...", a
    "### Final answer" heading) wins, the last one if there are several. Otherwise the conclusion is the last
    sentence that is not a pleasantry or a question; `earlier` holds the sentences before it.

    Args:
        answer: the model's answer (any object; non-strings are converted, huge strings cut to their tail).
    """
    # Each field of a multi-field label reads the same answer: its conclusion is found once.
    return _conclusion_of(bound_text(answer))


@lru_cache(maxsize=64)
def _conclusion_of(text: str) -> Conclusion:
    if not text.strip():
        return Conclusion("", whole=text)
    designated = _designated(text)
    if designated is not None and designated[0]:
        return Conclusion(designated[0], designated=True, whole=text, after=_after(text[designated[1] :]))
    # Only the tail can hold the conclusion and the sentences just before it.
    for size in _TAIL_CHARS:
        tail = text if len(text) <= size else text[-size:]
        kept = [s for s in split_sentences(tail) if not s.endswith("?") and not _PLEASANTRY_RE.match(s)]
        if len(tail) < len(text) and kept:
            kept = kept[1:]  # the first piece of a cut tail may be half a sentence
        if len(kept) > MAX_BACKTRACK_SENTENCES + 1 or len(tail) == len(text):
            break
    if not kept:
        return Conclusion("", whole=text)
    # The last conclusive sentence among the last few ("So it is X. The rope is long." concludes X), else the last.
    pick = len(kept) - 1
    for k in range(len(kept) - 1, max(-1, len(kept) - 2 - MAX_BACKTRACK_SENTENCES), -1):
        if is_conclusive(kept[k]):
            pick = k
            break
    while pick > 0 and _OPENS_SECOND_ANSWER_RE.match(kept[pick]):
        # "... suggest tai chi. Alternatively, it could be yoga.": the second answer is not the conclusion.
        pick -= 1
    earlier = [s[:MAX_CONCLUSION_CHARS] for s in reversed(kept[max(0, pick - MAX_BACKTRACK_SENTENCES) : pick])]
    after = " ".join(kept[pick + 1 :])[:MAX_CONCLUSION_CHARS]
    return Conclusion(kept[pick][:MAX_CONCLUSION_CHARS], whole=text, _earlier=earlier, after=after)


_OPENS_SECOND_ANSWER_RE = re.compile(
    r"(?i)^\W*(?:alternatively|or\b|if\s+not\b|otherwise|(?:an)?other\s+possibility|a\s+second\s+(?:possibility|guess|"
    r"estimate|option))"
)


def _after(text: str) -> str:
    """The sentences after a designated answer, pleasantries dropped, bounded."""
    if not text.strip():
        return ""
    kept = [s for s in split_sentences(text[: 2 * MAX_CONCLUSION_CHARS]) if not _PLEASANTRY_RE.match(s)]
    return " ".join(kept)[:MAX_CONCLUSION_CHARS]


def _tail_sentences(sentences: list[str], designated: str) -> list[str]:
    """Sentences before the designated answer (nearest first), to fall back on when it names nothing."""
    kept = [s for s in sentences if not _PLEASANTRY_RE.match(s) and not s.rstrip().endswith("?")]
    head = designated[:40]
    for i in range(len(kept) - 1, -1, -1):
        if head and head in kept[i]:
            kept = kept[:i]
            break
    return [s[:MAX_CONCLUSION_CHARS] for s in reversed(kept[-MAX_BACKTRACK_SENTENCES:])]


def extract_conclusion(answer: object) -> str:
    """The conclusion of an answer: the last designated final answer, else the last conclusive sentence.

    Args:
        answer: the model's answer; any object (None gives "").

    Returns:
        The conclusion text, stripped of markdown emphasis; "" when the answer concludes nothing.
    """
    return find_conclusion(answer).text.strip(" \t*_")


def is_conclusive(sentence: str) -> bool:
    """Whether a sentence reads as a conclusion ("therefore", "so", "in conclusion", "the person is", ...).

    Args:
        sentence: one sentence.
    """
    return bool(_CONCLUSIVE_RE.search(sentence[:MAX_CONCLUSION_CHARS]))


# ---------------------------------------------------------------------------------------------------------------
# Negation, rejection and hedges (on normalised text)
# ---------------------------------------------------------------------------------------------------------------

# A clause ends at punctuation or at a contrast word; negation before it does not reach past it.
_CLAUSE_BREAK_RE = re.compile(
    r"[.;:!?,()\[\]\n]|\b(?:but|however|though|although|yet|whereas|instead|actually|rather(?!\s+than)|so|"
    r"therefore|thus|hence|because|since|while|and\s+(?:it|this|that|he|she|they|the|i|we)|"
    r"or\s+(?:it|this|that|he|she|they|i|we))\b"
)
# A word or phrase that negates or rejects what follows it in the same clause.
_PRE_NEGATION_RE = re.compile(
    r"\b(?:not|no|never|neither|nor|nothing|none|without|than|unlike|excluding|except|besides|"
    r"instead\s+of|rather\s+than|other\s+than|as\s+opposed\s+to|apart\s+from|unlikely|ruled\s+out|rule\s+out|"
    r"ruling\s+out|rules\s+out|exclude|excludes|excluded|isnt|arent|wasnt|doesnt|dont|lack|lacks|absence|"
    r"instead\s+of|similar\s+to|resembl\w*|reminiscent\s+of|akin\s+to|mistaken\s+for|confused\s+with|"
    r"compared\s+to|compared\s+with|could\s+be\s+mistaken|at\s+first|initially)\b"
)
# A phrase that rejects what precedes it ("X is ruled out", "X is unlikely"); used with `match` at its end.
_POST_NEGATION_RE = re.compile(
    r"\W*(?:is\s+|was\s+|seems\s+|appears\s+|would\s+be\s+|can\s+be\s+|could\s+be\s+|has\s+been\s+|be\s+)?"
    r"(?:the\s+|an?\s+)?(?:not\b|ruled\s+out|unlikely|incorrect|wrong|excluded|eliminated|impossible|doubtful|"
    r"can\s+not\b|could\s+not\b|does\s+not\b|do\s+not\b|did\s+not\b|would\s+not\b|no\s+longer)"
)
NEGATION_WINDOW_CHARS = 90


# Phrases that contain a negation word but assert ("no doubt it is X", "none other than X").
_NEGATION_EXCEPTIONS_RE = re.compile(
    r"\b(?:(?:no|without(?:\s+a)?|beyond(?:\s+a)?)\s+(?:doubt|question)|not\s+only|not\s+just|nothing\s+but|"
    r"(?:no|none)\s+other\s+than|no\s+(?:mistaking|denying)|not\s+(?:sure|certain)|"
    r"can\s+not\s+be\s+anything\s+(?:else|other)\s+than|not\s+(?:anything\s+)?(?:else|other)\s+than)\b"
)


def clause_before(norm: str, start: int) -> str:
    """The part of the clause that precedes position `start` in normalised text.

    Args:
        norm: normalised text.
        start: a character position in it.
    """
    window = norm[max(0, start - NEGATION_WINDOW_CHARS) : start]
    cut = 0
    for m in _CLAUSE_BREAK_RE.finditer(window):
        cut = m.end()
    return window[cut:]


def clause_after(norm: str, end: int) -> str:
    """The part of the clause that follows position `end` in normalised text.

    Args:
        norm: normalised text.
        end: a character position in it.
    """
    window = norm[end : end + NEGATION_WINDOW_CHARS]
    m = _CLAUSE_BREAK_RE.search(window)
    if m is None:
        return window
    # "X, not Y" is two clauses, but "X is not" continues the clause of X.
    return window[: m.start()]


def is_negated(norm: str, start: int, end: int) -> bool:
    """Whether the mention at `[start, end)` of a normalised text is negated or rejected.

    Catches "not X", "no X", "rather than X", "instead of X", "X rather than"..., "unlike X", "more like Y than X",
    "X is ruled out", "X is not the answer", "I don't think it is X", "similar to X" (a comparison, not a claim).

    Args:
        norm: normalised text (see `normalize_text`).
        start: the mention's first character.
        end: the position after its last character.
    """
    return negation_scope(norm).negated(start, end)


class NegationScope:
    """Clause breaks and negation words of one normalised text, found once and queried per mention.

    Args:
        norm: normalised text.
    """

    def __init__(self, norm: str):
        self.norm = norm
        breaks = [(m.start(), m.end()) for m in _CLAUSE_BREAK_RE.finditer(norm)]
        self.break_starts = [b[0] for b in breaks]
        self.break_ends = [b[1] for b in breaks]
        # Exceptions are blanked with spaces of the same length so that offsets stay valid.
        scrubbed = _NEGATION_EXCEPTIONS_RE.sub(lambda m: " " * len(m.group(0)), norm) if "no" in norm else norm
        negators = [(m.start(), m.end()) for m in _PRE_NEGATION_RE.finditer(scrubbed)]
        self.negator_starts = [n[0] for n in negators]
        self.negator_ends = [n[1] for n in negators]

    def negated(self, start: int, end: int) -> bool:
        """Whether `[start, end)` is negated or rejected (see `is_negated`).

        Args:
            start: the mention's first character.
            end: the position after its last character.
        """
        lo = max(0, start - NEGATION_WINDOW_CHARS)
        i = bisect.bisect_right(self.break_ends, start) - 1
        if i >= 0:
            lo = max(lo, self.break_ends[i])
        k = bisect.bisect_left(self.negator_starts, lo)
        if k < len(self.negator_starts) and self.negator_ends[k] <= start:
            return True
        j = bisect.bisect_left(self.break_starts, end)
        hi = min(end + NEGATION_WINDOW_CHARS, self.break_starts[j] if j < len(self.break_starts) else len(self.norm))
        return _POST_NEGATION_RE.match(self.norm, end, max(end, hi)) is not None


@lru_cache(maxsize=32)
def negation_scope(norm: str) -> NegationScope:
    """The (cached) `NegationScope` of a normalised text.

    Args:
        norm: normalised text.
    """
    return NegationScope(norm)


# Phrases that refuse to commit to one answer: with them, even a single named class is no conclusion.
_NONCOMMITTAL_RE = re.compile(
    r"\b(?:impossible\s+to\s+(?:tell|say|determine|know)|can\s+not\s+(?:tell|say|determine|be\s+(?:sure|certain)|"
    r"identify|know|decide)|could\s+not\s+(?:tell|say|determine|identify|decide)|do\s+not\s+know|no\s+idea|either|"
    r"or\s+(?:something|some\s+other|another|other|possibly|maybe|perhaps)|one\s+of\s+(?:the\s+)?(?:following|these|"
    r"those|several|two)|insufficient|not\s+enough\s+(?:information|evidence|detail)|ambiguous|undetermined|"
    r"not\s+possible\s+to|unknown|unidentifiable|any\s+of)\b"
)
# Phrases that only soften a claim ("not sure, but I think it is X"): a single named class still counts.
_TENTATIVE_RE = re.compile(
    r"\b(?:not\s+(?:entirely\s+|completely\s+|100\s+)?(?:sure|certain)|unsure|uncertain|unclear|hard\s+to\s+"
    r"(?:tell|say|determine)|difficult\s+to\s+(?:tell|say|determine)|maybe|perhaps|possibly|might|could|probably|likely)\b"
)


def is_noncommittal(norm: str) -> bool:
    """Whether normalised text refuses to commit ("can't tell", "either", "X or something else", "unknown").

    Args:
        norm: normalised text.
    """
    return bool(_NONCOMMITTAL_RE.search(norm[:MAX_CONCLUSION_CHARS]))


def is_tentative(norm: str) -> bool:
    """Whether normalised text softens its claim ("not sure", "maybe", "probably", "hard to tell").

    Args:
        norm: normalised text.
    """
    return bool(_TENTATIVE_RE.search(norm[:MAX_CONCLUSION_CHARS]))


# Phrases that offer a second answer beside the first: "alternatively", "a second estimate", "it could also be".
_SECOND_ANSWER = (
    r"alternatively|alternative\s+(?:answer|estimate|reading|interpretation|guess)|"
    r"(?:an)?other\s+(?:possibility|possible\s+(?:answer|class|action|score|value)|option|estimate|guess|candidate|"
    r"reading|interpretation)|other\s+possibilities|"
    r"second\s+(?:estimate|guess|choice|possibility|option|answer|candidate|reading|interpretation|pick)|"
    r"as\s+(?:a|my)\s+(?:second|backup|fallback)|"
    r"if\s+not\s*[,:]|if\s+not\s+(?:that|this|it)\b|unless\s+(?:it|this|that)\s+(?:is|was)\b"
)
# ... and the same with the weaker "could also be" (not "could also be called X": that names the same answer).
_SECOND_ANSWER_LOOSE = (
    _SECOND_ANSWER + r"|(?:could|might|may|can|would)\s+also\s+(?:be|pass\s+as)\b(?!\s+(?:called|described|known|"
    r"seen|referred|termed|named|written|spelled|spelt|labell?ed|considered\s+as))"
)
_SECOND_ANSWER_RE = re.compile(r"\b(?:" + _SECOND_ANSWER + r")")
_SECOND_ANSWER_LOOSE_RE = re.compile(r"\b(?:" + _SECOND_ANSWER_LOOSE + r")")


def offers_second_answer(norm: str, loose: bool = True) -> re.Match[str] | None:
    """Where normalised text offers a second answer beside its first ("alternatively", "a second estimate",
    "another possibility is", "if not, ...", "unless it is", and with `loose` "it could also be").

    Args:
        norm: normalised text (see `normalize_text`).
        loose: whether "could / might / may also be" counts (it does when the text that follows names an answer).
    """
    return (_SECOND_ANSWER_LOOSE_RE if loose else _SECOND_ANSWER_RE).search(norm[:MAX_CONCLUSION_CHARS])


_ALTERNATIVE_RE = re.compile(
    r"(?:\bor\b|/|\bversus\b|\bvs\b|\b(?:possibly|perhaps|maybe)\b|\b(?:" + _SECOND_ANSWER_LOOSE + r"))"
)


def joined_by_alternative(norm: str, end: int, start: int) -> bool:
    """Whether the text between two mentions offers them as alternatives ("X or Y", "X/Y", "X vs Y", "X, though it
    could also be Y", "X; another possibility is Y", "X, possibly Y").

    Args:
        norm: normalised text.
        end: the end of the first mention.
        start: the start of the second mention.
    """
    between = norm[end:start] if 0 <= end <= start else ""
    return len(between) < 60 and bool(_ALTERNATIVE_RE.search(between))


# ---------------------------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------------------------

_ONES = {
    word: value
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen".split()
    )
}
_TENS = {
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fourty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}
_DIGIT_WORDS = {k: v for k, v in _ONES.items() if v < 10}
# A number-ish token: digits (decimal point or thousands commas), a number word, or one symbol we read.
_NUM_TOKEN_RE = re.compile(r"\d+(?:,\d{3})+(?!\d)|\d+,\d{1,2}(?!\d)|\d+(?:\.\d+)?|[a-z]+|[/%~\-–]")
# "sixty-five" is one number; "60-70" is a range.
_WORD_HYPHEN_RE = re.compile(r"(?<=[a-z])-(?=[a-z])")
_NUMBER_START = frozenset(_ONES) | frozenset(_TENS)
# Words after which "one" is a number ("one twist") rather than a pronoun ("the one on the left").
_ONE_UNITS = frozenset({"twist", "twists", "somersault", "somersaults", "som", "soms", "point", "points", "turn"})


@dataclass(frozen=True)
class NumberSpan:
    """A number found in text.

    Args:
        value: its value.
        start: first character (in the text that was parsed).
        end: position after its last character.
        kind: `value`, `range` (one end of "60-70" / "between 60 and 70"), `alternative` ("65 or 70"),
            `denominator` ("out of 100"), `percent`.
    """

    value: float
    start: int
    end: int
    kind: str = "value"


def _digits_value(tok: str) -> float | None:
    try:
        if "," in tok:
            head, _, tail = tok.partition(",")
            if len(tail) == 3 or tok.count(",") > 1:
                return float(tok.replace(",", ""))
            return float(f"{head}.{tail}")
        return float(tok)
    except ValueError:
        return None


def prepare_numeric_text(text: object) -> str:
    """Text as `find_numbers` reads it, so that spans it returns index this string.

    Bounded, vulgar fractions spelled out ("3½" -> "3 1/2"), NFKC, lowercase, "n't" -> " not", hyphens between
    words as spaces ("sixty-five"); hyphens between digits stay (they mark ranges). Idempotent.

    Args:
        text: any text.
    """
    text = bound_text(text)
    text = _VULGAR_RE.sub(lambda m: _VULGAR[m.group(0)], text)
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES)
    text = text.lower()
    if "n't" in text:
        text = text.replace("won't", "will not").replace("can't", "can not")
        text = _NOT_RE.sub(lambda m: m.group(1) + " not", text).replace("n't", " not")
    return _WORD_HYPHEN_RE.sub(" ", text)


def find_numbers(text: str, max_numbers: int = 64) -> list[NumberSpan]:
    """Numbers in text: digits, decimals, number words, fractions and mixed numbers, with ranges marked.

    Reads "65.6", "1,000", "3½", "3 1/2", "three and a half", "sixty-five point six", "eighty eight", "a half".
    "65.6/100" and "65.6 out of 100" give 65.6 (the denominator is marked). "60-70", "60 to 70" and
    "between 60 and 70" are marked `range`, "65 or 70" `alternative`. The bare word "one" counts only in a number
    phrase ("one and a half", "one point five", "twenty one"), since "the one on the left" is no number.

    Args:
        text: any text; it is normalised here (do not pass text with hyphens already removed if ranges matter).
        max_numbers: stop after this many numbers.
    """
    # Several fields of one answer read the same conclusion: parse it once.
    return list(_find_numbers(prepare_numeric_text(text), max_numbers))


@lru_cache(maxsize=256)
def _find_numbers(text: str, max_numbers: int) -> tuple[NumberSpan, ...]:
    toks = [(m.group(0), m.start(), m.end()) for m in _NUM_TOKEN_RE.finditer(text)]
    out: list[NumberSpan] = []
    i = 0
    n = len(toks)
    while i < n and len(out) < max_numbers:
        tok, s, e = toks[i]
        value: float | None = None
        j = i + 1
        if tok[0].isdigit():
            value = _digits_value(tok)
        elif tok in _ONES or tok in _TENS:
            value, j = _parse_words(toks, i)
            if value is None:
                i += 1
                continue
        elif tok == "half" or (tok == "a" and i + 1 < n and toks[i + 1][0] == "half"):
            j = i + 1 if tok == "half" else i + 2
            value = 0.5
        if value is None:
            i += 1
            continue
        end = toks[j - 1][2]
        # Fractions and mixed numbers: "1/2", "3 1/2"; a large denominator is a scale ("65.6/100").
        if j + 1 < n and toks[j][0] == "/" and toks[j + 1][0][0].isdigit() and toks[j][1] == end:
            den = _digits_value(toks[j + 1][0]) or 0.0
            if den in (2.0, 3.0, 4.0, 8.0) and value < den:
                frac = value / den
                if out and out[-1].kind == "value" and out[-1].end < s and text[out[-1].end : s].strip() == "":
                    prev = out.pop()
                    if prev.value == int(prev.value):
                        value, s = prev.value + frac, prev.start
                    else:
                        out.append(prev)
                        value = frac
                else:
                    value = frac
                end = toks[j + 1][2]
                j += 2
            else:
                out.append(NumberSpan(value, s, end))
                out.append(NumberSpan(den, toks[j + 1][1], toks[j + 1][2], "denominator"))
                i = j + 2
                continue
        # "and a half" after digits: "3 and a half".
        if (
            tok[0].isdigit()
            and j + 2 < n
            and toks[j][0] == "and"
            and toks[j + 1][0] == "a"
            and toks[j + 2][0]
            in (
                "half",
                "quarter",
            )
        ):
            value += 0.5 if toks[j + 2][0] == "half" else 0.25
            end = toks[j + 2][2]
            j += 3
        kind = "value"
        if j < n and toks[j][0] == "%" and toks[j][1] == end:
            kind = "percent"
            j += 1
        # "out of 100": the next number is a scale, not a value.
        if i >= 2 and toks[i - 1][0] == "of" and toks[i - 2][0] == "out":
            kind = "denominator"
        out.append(NumberSpan(value, s, end, kind))
        i = j
    _mark_ranges(text, out)
    return tuple(out)


def _parse_words(toks: list[tuple[str, int, int]], i: int) -> tuple[float | None, int]:
    """A number spelled in words starting at token i; returns (value, next index), value None if not a number."""
    n = len(toks)
    total = 0.0
    current = 0.0
    last = ""
    j = i
    while j < n:
        w = toks[j][0]
        if w in _ONES:
            if last in ("ones", "teen") or (last == "tens" and _ONES[w] >= 10):
                break
            current += _ONES[w]
            last = "teen" if _ONES[w] >= 10 else "ones"
        elif w in _TENS:
            if last in ("ones", "teen", "tens"):
                break
            current += _TENS[w]
            last = "tens"
        elif w == "hundred" and last in ("ones", "teen"):
            current *= 100
            last = "hundred"
        elif w == "thousand" and last:
            total += current * 1000
            current = 0.0
            last = "thousand"
        elif w == "and" and last in ("hundred", "thousand") and j + 1 < n and toks[j + 1][0] in _NUMBER_START:
            last = "and"
        else:
            break
        j += 1
    value = total + current
    words = j - i
    if j + 2 < n and toks[j][0] == "and" and toks[j + 1][0] == "a" and toks[j + 2][0] in ("half", "quarter"):
        value += 0.5 if toks[j + 2][0] == "half" else 0.25
        return value, j + 3
    if j + 1 < n and toks[j][0] == "point" and (toks[j + 1][0] in _DIGIT_WORDS or toks[j + 1][0].isdigit()):
        j += 1
        digits = ""
        while j < n and (toks[j][0] in _DIGIT_WORDS or (toks[j][0].isdigit() and not digits)):
            digits += str(_DIGIT_WORDS[toks[j][0]]) if toks[j][0] in _DIGIT_WORDS else toks[j][0]
            j += 1
        return float(f"{int(value)}.{digits}"), j
    if j < n and toks[j][0] == "half" and words == 1 and toks[i][0] == "one":
        return 0.5, j + 1
    if words == 1 and toks[i][0] == "one":
        # The bare word "one" is usually a pronoun ("the one on the left"); it counts before a unit or alone.
        if (j < n and toks[j][0] in _ONE_UNITS) or n == 1:
            return 1.0, j
        return None, i + 1
    return value, j


_RANGE_BETWEEN_RE = re.compile(r"^\s*(?:-|–|to|and)\s*$")
_ALT_BETWEEN_RE = re.compile(
    r"^\s*[,;(\[]?\s*(?:(?:or|/)(?:\s+(?:maybe|possibly|perhaps|even|else|alternatively))?|(?:but\s+)?"
    r"(?:maybe|possibly|perhaps)|alternatively|otherwise|if\s+not|(?:or\s+)?(?:an?\s+|my\s+)?(?:other|another|second|"
    r"alternative|different)\s+(?:estimate|guess|value|score|reading|possibility|option|answer)(?:\s+(?:would\s+be|"
    r"is|of|at|could\s+be))?)\s*[:=,]?\s*(?:about|around|roughly)?\s*$"
)
# "70.5 ± 3", "70.5 +/- 3", "70.5 plus or minus 3": a value with an error margin states a range.
_PLUS_MINUS_RE = re.compile(r"^\s*(?:±|\+/-|\+-|plus\s+or\s+minus)\s*$")


def _mark_ranges(text: str, nums: list[NumberSpan]) -> None:
    for k in range(len(nums) - 1):
        a, b = nums[k], nums[k + 1]
        if a.kind not in ("value", "range") or b.kind != "value":
            continue
        between = text[a.end : b.start]
        if _PLUS_MINUS_RE.match(between):
            nums[k] = NumberSpan(a.value - b.value, a.start, a.end, "range")
            nums[k + 1] = NumberSpan(a.value + b.value, b.start, b.end, "range")
        elif _RANGE_BETWEEN_RE.match(between):
            if between.strip() == "and" and not text[max(0, a.start - 12) : a.start].rstrip().endswith("between"):
                continue
            nums[k] = NumberSpan(a.value, a.start, a.end, "range")
            nums[k + 1] = NumberSpan(b.value, b.start, b.end, "range")
        elif _ALT_BETWEEN_RE.match(between):
            nums[k] = NumberSpan(a.value, a.start, a.end, "alternative")
            nums[k + 1] = NumberSpan(b.value, b.start, b.end, "alternative")


def parse_number(text: str) -> float | None:
    """The single value a short text states ("3.2", "three and a half", "3½"), or None if none or several.

    Args:
        text: a short text such as a final-answer line.
    """
    values = {round(n.value, 9) for n in find_numbers(text) if n.kind == "value"}
    return values.pop() if len(values) == 1 else None
