"""Categorical verification: does the answer's conclusion name the label's class, and only it?

The verifier finds class mentions in the conclusion of an answer by matching word stems (so word order,
plurals, inflections, hyphens, capitalisation, British/American spelling and extra adjectives do not matter),
then judges them the way a careful reader would:

- a negated or rejected mention ("not abseiling", "rather than abseiling") does not count;
- with the class vocabulary known, a longer class that contains the label's words wins over the label
  ("playing bass guitar" is not "playing guitar": a near miss);
- a parenthetical qualifier is a constraint: "petting animal (not cat)" accepts petting a dog, rejects petting a
  cat; positive qualifiers ("(sport)", "(in game)") only break ties between classes with the same base;
- an answer that names several classes, or refuses to commit ("either", "can't tell"), is hedged, and so is one
  that offers a second class beside its answer ("abseiling (or possibly rock climbing)", "abseiling. A second
  possibility is rock climbing.", "Answer: abseiling\nAlternatively, it could be ...").

Everything that depends on the vocabulary is computed once in the constructor; a verification touches only
the classes that share a word with the conclusion.

```python
from vstar.verify.categorical import CategoricalVerifier
v = CategoricalVerifier(classes=["playing guitar", "playing bass guitar", "abseiling"])
v.verify_field("He plucks four thick strings.\\nAnswer: playing bass guitar", "playing guitar").reason  # 'near_miss'
```
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from rapidfuzz import fuzz, process

from vstar.verify.answer import (
    Conclusion,
    clause_after,
    clause_before,
    find_conclusion,
    is_negated,
    is_noncommittal,
    joined_by_alternative,
    normalize_text,
    offers_second_answer,
    split_sentences,
    stem,
)
from vstar.verify.base import FieldVerdict

# Words that carry no class identity: dropped from class names and ignored in answers.
STOPWORDS = frozenset(
    "a an the some any this that these those his her their its my your our is are was were be been being am "
    "he she it they him them i we you me us there here what which who whom whose very just also really "
    "seems seem appears appear looks look like likely probably clearly".split()
)
# Prepositions in class names are optional ("swimming with dolphins" ~ "swimming alongside dolphins").
OPTIONAL = frozenset("with to on in of at for from by into onto".split())
# "or" and "and" join alternatives or clauses in answers; in class names they are read by `_phrase_variants`.
_SKIP = STOPWORDS | OPTIONAL | {"or", "and"}
_WORD_RE = re.compile(r"[^\W_]+")
# How many extra content words may sit inside a mention ("playing an old acoustic guitar").
SLACK = 3

# A class word also matched by more specific words: "petting animal (not cat)" covers petting a dog.
HYPONYMS: dict[str, tuple[str, ...]] = {
    "animal": (
        "dog cat horse pony donkey rabbit bunny goat sheep lamb cow calf pig piglet bird parrot chicken duck hamster "
        "ferret llama alpaca deer fox squirrel lizard snake turtle tortoise hedgehog guinea mouse rat"
    ).split(),
    "person": "man woman boy girl guy lady someone somebody opponent partner friend child player".split(),
}
# Words that also violate an exclusion qualifier ("(not on barbeque)" is violated by a grill).
EXCLUSION_SYNONYMS: dict[str, tuple[str, ...]] = {
    "barbecue": ("grill", "grilling"),
    "tie": ("necktie",),
    "bike": ("motorbike", "motorcycle", "bmx"),
    "wine": ("champagne",),
    "baby": ("toddler", "newborn"),
    "cat": ("kitten", "kitty"),
    "gaming": ("game", "videogame", "console"),
}

_SPAN_BREAK_RE = re.compile(
    r"[.;!?]\s|,\s*(?:not|but|rather|instead|unlike|or)\b|\(\s*(?:or|possibly|perhaps|maybe|alternatively)\b"
)
# After the class an answer names, these offer another one ("abseiling (possibly rock climbing)", "... or ...").
_HEDGE_AFTER_RE = re.compile(r"(?:\bor\b|/|\bpossibly\b|\bperhaps\b|\bmaybe\b)")
# A later sentence that opens with one of these offers another answer ("Or rock climbing.", "Possibly yoga.").
_HEDGE_OPENING_RE = re.compile(r"^\W*(?:or|possibly|perhaps|maybe)\b")
_INNER_NEGATION_RE = re.compile(r"\b(?:not|no|never|nor|neither|than|instead|rather|without|unlike)\b")
_QUALIFIER_RE = re.compile(r"^(.*?)\s*\(([^()]*)\)\s*$")
_SPLIT_OR_RE = re.compile(r"\s+or\s+|\s*,\s*")
# "abseiling or ..." / ".../abseiling": the mention is one of alternatives offered.
_OR_AFTER_RE = re.compile(r"^\s*(?:or|/|vs|versus)\b")
_OR_BEFORE_RE = re.compile(r"\b(?:or|/|vs|versus|either)\s*$")


# An occurrence of a word: (first content position, last content position, char start, char end).
_Occ = tuple[int, int, int, int]


@dataclass(frozen=True)
class _Variant:
    """One way to name a class: per slot, the stems that fill it."""

    cls: int
    slots: tuple[frozenset[str], ...]
    primary: tuple[str, ...]


@dataclass(frozen=True)
class _ClassInfo:
    name: str
    exclusions: tuple[frozenset[str], ...]
    qualifier: frozenset[str]


@dataclass(slots=True)
class _Mention:
    cls: int
    positions: frozenset[int]
    start: int
    end: int
    size: int
    width: int
    exact: int = 0
    literal: frozenset[int] = frozenset()
    spans: tuple[tuple[int, int], ...] = ()
    ordered: bool = True
    negated: bool = False
    violates: bool = False


@dataclass
class _Reading:
    """What one piece of text says about the classes."""

    positive: list[list[int]]  # groups of tied classes, in order of appearance
    negated: set[int]
    violated: set[int]
    dominated: dict[int, int]  # class -> the class whose longer mention covered it
    noncommittal: bool
    alternative: bool
    last_end: int = 0  # where the last positive mention ends (in the normalised text)

    @property
    def says_something(self) -> bool:
        return bool(self.positive or self.negated or self.violated or self.noncommittal)


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[^\W_]+", normalize_text(text)) if w not in STOPWORDS]


def _slot(word: str) -> tuple[str, frozenset[str]]:
    s = stem(word)
    return s, frozenset({s, *(stem(h) for h in HYPONYMS.get(word, HYPONYMS.get(s, ())))})


def _phrase_variants(phrase: str) -> list[tuple[tuple[str, frozenset[str]], ...]]:
    """Slot sequences for a phrase: "or" alternatives expanded, optional words dropped, compounds joined."""
    words = [w for w in _words(phrase)]
    alternatives: list[list[str]] = [words]
    if "or" in words:
        k = words.index("or")
        left, right = words[:k], words[k + 1 :]
        if left and right:
            alternatives = [left + right[1:], left[:-1] + right]
    out: list[tuple[tuple[str, frozenset[str]], ...]] = []
    for alt in alternatives:
        content = [w for w in alt if w not in _SKIP] or alt
        out.append(tuple(_slot(w) for w in content))
        # Compounds written as one word: "push up" ~ "pushups", "bee keeping" ~ "beekeeping".
        for k in range(len(content) - 1):
            joined = content[:k] + [content[k] + content[k + 1]] + content[k + 2 :]
            out.append(tuple(_slot(w) for w in joined))
    return out


def _parse_class(name: str) -> tuple[str, frozenset[str], tuple[frozenset[str], ...]]:
    """Split a class name into its base, positive qualifier stems and exclusion stem sets."""
    m = _QUALIFIER_RE.match(name)
    if not m:
        return name, frozenset(), ()
    base, qualifier = m.group(1), m.group(2).strip()
    words = _words(qualifier)
    if words and words[0] == "not":
        exclusions = []
        for part in _SPLIT_OR_RE.split(qualifier.lower().removeprefix("not").strip()):
            content = [w for w in _words(part) if w not in OPTIONAL]
            if content:
                # The head noun decides ("American football" is violated by "football").
                head = content[-1]
                exclusions.append(frozenset({stem(head), *(stem(s) for s in EXCLUSION_SYNONYMS.get(head, ()))}))
        return base, frozenset(), tuple(exclusions)
    return base, frozenset(stem(w) for w in words if w not in OPTIONAL), ()


class _Index:
    """Class variants indexed by their rarest slot, so a lookup touches only plausible classes."""

    def __init__(self, classes: Sequence[str], aliases: Mapping[str, Sequence[str]]):
        self.infos: list[_ClassInfo] = []
        self.variants: list[_Variant] = []
        for i, name in enumerate(classes):
            base, qualifier, exclusions = _parse_class(name)
            self.infos.append(_ClassInfo(name, exclusions, qualifier))
            phrases = [base, *aliases.get(name, ())]
            seen: set[tuple[tuple[str, frozenset[str]], ...]] = set()
            for phrase in phrases:
                for slots in _phrase_variants(phrase):
                    if slots and slots not in seen:
                        seen.add(slots)
                        self.variants.append(_Variant(i, tuple(x[1] for x in slots), tuple(x[0] for x in slots)))
        df: dict[str, int] = {}
        for v in self.variants:
            for s in set().union(*v.slots):
                df[s] = df.get(s, 0) + 1
        self.anchor: dict[str, list[int]] = {}
        for vid, v in enumerate(self.variants):
            rarest = min(v.slots, key=lambda slot: sum(df[s] for s in slot))
            for s in rarest:
                self.anchor.setdefault(s, []).append(vid)
        self.vocabulary: list[str] = sorted(df)
        # Each class's own words (all its names), to tell a word of another class in a hedge ("possibly bass").
        words: list[set[str]] = [set() for _ in self.infos]
        for v in self.variants:
            words[v.cls].update(v.primary)
        self.class_words: list[frozenset[str]] = [frozenset(w) for w in words]

    def mentions(self, occ: Mapping[str, list[_Occ]]) -> list[_Mention]:
        candidates: set[int] = set()
        for s in occ:
            vids = self.anchor.get(s)
            if vids:
                candidates.update(vids)
        out: list[_Mention] = []
        for vid in candidates:
            m = self._match(self.variants[vid], occ)
            if m is not None:
                out.append(m)
        return out

    @staticmethod
    def _match(v: _Variant, occ: Mapping[str, list[_Occ]]) -> _Mention | None:
        if len(v.slots) == 1:
            # Most class names are one word after stop words are dropped: no window to search.
            found = occ.get(v.primary[0])
            literal = bool(found)
            if not found:
                found = [o for s in v.slots[0] & occ.keys() for o in occ[s]]
                if not found:
                    return None
            o = min(found)
            return _Mention(
                v.cls,
                frozenset(range(o[0], o[1] + 1)),
                o[2],
                o[3],
                1,
                o[1] - o[0] + 1,
                int(literal),
                frozenset({o[0]}) if literal else frozenset(),
                ((o[2], o[3]),),
                True,
            )
        keys = occ.keys()
        for slot, primary in zip(v.slots, v.primary):
            if primary not in occ and (len(slot) == 1 or not slot & keys):
                return None
        per_slot: list[list[_Occ]] = []
        exact: set[_Occ] = set()
        for slot, primary in zip(v.slots, v.primary):
            if len(slot) == 1:
                found = list(occ.get(primary, ()))
            else:
                found = [o for s in (slot & occ.keys()) for o in occ[s]]
            if not found:
                return None
            per_slot.append(found)
            exact.update(occ.get(primary, ()))
        best: _Mention | None = None
        anchor_k = min(range(len(per_slot)), key=lambda k: len(per_slot[k]))
        for a in per_slot[anchor_k]:
            chosen = []
            used = {a[0]}
            for k, found in enumerate(per_slot):
                if k == anchor_k:
                    chosen.append(a)
                    continue
                # The nearest free occurrence: one word cannot fill two slots. A word standing in for a class
                # word keeps the class's word order, so in "a man is punching a bag" the subject "man" is not the
                # "person" of "punching person".
                pick = None
                for o in found:
                    if o[0] in used:
                        continue
                    if (o not in exact or a not in exact) and (o[0] < a[0]) != (k < anchor_k):
                        continue
                    if pick is None or abs(o[0] - a[0]) < abs(pick[0] - a[0]):
                        pick = o
                if pick is None:
                    break
                used.add(pick[0])
                chosen.append(pick)
            if len(chosen) < len(per_slot):
                continue
            positions = frozenset(p for o in chosen for p in range(o[0], o[1] + 1))
            lo = min(o[0] for o in chosen)
            hi = max(o[1] for o in chosen)
            width = hi - lo + 1
            if width > len(positions) + SLACK:
                continue
            start, end = min(o[2] for o in chosen), max(o[3] for o in chosen)
            literal = frozenset(o[0] for o in chosen if o in exact)
            spans = tuple(sorted((o[2], o[3]) for o in chosen))
            ordered = all(x[0] < y[0] for x, y in zip(chosen, chosen[1:]))
            m = _Mention(v.cls, positions, start, end, len(v.slots), width, len(literal), literal, spans, ordered)
            if best is None or m.width < best.width:
                best = m
        return best


def _occurrences(norm: str, max_tokens: int = 200) -> dict[str, list[_Occ]]:
    """Content-word stems of normalised text -> (first position, last position, char start, char end)."""
    content: list[tuple[str, int, int]] = []
    for m in _WORD_RE.finditer(norm):
        w = m.group(0)
        if w in _SKIP:
            continue
        content.append((w, m.start(), m.end()))
        if len(content) >= max_tokens:
            break
    occ: dict[str, list[_Occ]] = {}
    last = len(content) - 1
    for k, (w, s, e) in enumerate(content):
        key = stem(w)
        if key in occ:
            occ[key].append((k, k, s, e))
        else:
            occ[key] = [(k, k, s, e)]
        if k < last:
            w2, s2, e2 = content[k + 1]
            if s2 == e + 1 or not norm[e:s2].strip():
                occ.setdefault(stem(w + w2), []).append((k, k + 1, s, e2))
    return occ


_VERBATIM_BLOCK_RE = re.compile(r"[?,;/:]")
_VERBATIM_WORD_RE = re.compile(r"[^\W_]+")


def _verbatim_key(text: str) -> str | None:
    """The words of a short, plain statement, or None when punctuation could change its meaning."""
    if len(text) > 120 or _VERBATIM_BLOCK_RE.search(text):
        return None
    return " ".join(_VERBATIM_WORD_RE.findall(normalize_text(text))) or None


_expected_key = lru_cache(maxsize=4096)(_verbatim_key)


def _asserted(norm: str, occ: Mapping[str, list[_Occ]], words: frozenset[str]) -> bool:
    """Whether every word occurs at least once outside a negation ("in a game", not "not in game")."""
    return all(any(not is_negated(norm, o[2], o[3]) for o in occ.get(w, ())) for w in words)


class CategoricalVerifier:
    """Judges whether an answer concludes the expected class.

    Args:
        classes: the dataset's class vocabulary. With it, near misses (a different class containing the label's
            words) are rejected and `predict` returns vocabulary names; without it, only the expected class is
            looked for and `predict` returns the normalised conclusion.
        threshold: rapidfuzz `ratio` score (0-100) above which a misspelt word of the conclusion is read as a
            class word ("abseilling"); used only when no class is found word for word.
        aliases: per class name, other phrasings that name it (a dataset's alias table), e.g.
            `{"abseiling": ["rappelling"]}`.
    """

    def __init__(
        self,
        classes: Sequence[str] | None = None,
        threshold: float = 85.0,
        aliases: Mapping[str, Sequence[str]] | None = None,
    ):
        self.classes: list[str] | None = list(dict.fromkeys(classes)) if classes is not None else None
        self.threshold = float(threshold)
        self.aliases: dict[str, list[str]] = {k: list(v) for k, v in (aliases or {}).items()}
        self._index = _Index(self.classes, self.aliases) if self.classes else None
        self._class_ids = {c: i for i, c in enumerate(self.classes or ())}
        self._single = lru_cache(maxsize=4096)(self._single_index)
        # Answers that state a class name verbatim ("Answer: playing guitar") skip the mention search.
        self._verbatim: dict[str, str | None] = {}
        for name in self.classes or ():
            base = _QUALIFIER_RE.sub(r"\1", name)
            for phrase in (name, base, *self.aliases.get(name, ())):
                key = _verbatim_key(phrase)
                if key:
                    # A phrase shared by two classes ("passing American football") decides nothing.
                    known = self._verbatim.get(key, name)
                    self._verbatim[key] = name if known == name else None
        self._extra_cache = lru_cache(maxsize=256)(self._with_extra)

    def _offers_other(self, texts: Sequence[tuple[str, bool]], expected: str | None, target: set[int]) -> bool:
        """Whether any of the texts after the named class offers another class beside it.

        Args:
            texts: `(normalised text, opening)`: with `opening` the text is what follows the mention in its own
                sentence, where "or" / "possibly" introduce an alternative; otherwise it is a later sentence, which
                must offer a second answer in so many words ("alternatively", "it could also be", "or ...").
            expected: the label (its index is searched too), or None.
            target: the ids of the named class in the index space of `expected`.
        """
        indexes, _, _ = self._indexes(expected)
        own = set().union(*(indexes[0].class_words[t] for t in target if t < len(indexes[0].class_words)))
        for norm, opening in texts:
            if not norm.strip():
                continue
            intro = _HEDGE_AFTER_RE.search(norm) if opening else None
            if intro is None:
                intro = _HEDGE_OPENING_RE.search(norm) or offers_second_answer(norm, loose=self._index is not None)
            if intro is None or is_negated(norm, intro.start(), intro.end()):
                # "throwing ball (not baseball or American football)": an "or" inside a negation offers nothing.
                continue
            tail = norm[intro.end() :]
            reading, _ = self._read(tail, expected)
            if any(not target & set(group) for group in reading.positive):
                return True
            if self._index is None:
                # No vocabulary: an explicit second answer that says anything beside the label is a hedge.
                strict = offers_second_answer(norm, loose=False)
                if not opening and strict is not None and not reading.positive:
                    if any(w not in _SKIP for w in _WORD_RE.findall(norm[strict.end() :])):
                        return True
                continue
            words = {stem(w) for w in _WORD_RE.findall(tail) if w not in _SKIP}
            if any(words & (c - own) for i, c in enumerate(self._index.class_words) if i not in target):
                return True
        return False

    def _hedge_texts(self, conclusion: Conclusion, piece: str, reading: _Reading | None) -> list[tuple[str, bool]]:
        """What an answer says after the class it names: the rest of its sentence, later sentences, the tail."""
        texts: list[tuple[str, bool]] = []
        if reading is not None and piece:
            texts.append((normalize_text(piece)[reading.last_end :], True))
        if conclusion.designated and piece:
            pieces = split_sentences(conclusion.text)[:4]
            if piece in pieces:
                texts.extend((normalize_text(p), False) for p in pieces[pieces.index(piece) + 1 :])
        if conclusion.after:
            texts.append((normalize_text(conclusion.after), False))
        return texts

    def _target(self, expected: str) -> set[int]:
        """The id of the expected class in the index space that `_indexes(expected)` searches."""
        if expected in self._class_ids:
            return {self._class_ids[expected]}
        return {len(self._indexes(expected)[1]) - 1}

    def _single_index(self, name: str) -> _Index:
        return _Index([name], self.aliases)

    # -- reading ------------------------------------------------------------------------------------------------

    def _indexes(self, expected: str | None) -> tuple[list[_Index], list[str], list[_ClassInfo]]:
        """The indexes to search, with the class names and infos of their concatenated id space."""
        if expected is None or expected in self._class_ids:
            if self._index is None:
                return [], [], []
            return [self._index], self.classes or [], self._index.infos
        return self._extra_cache(expected)

    def _with_extra(self, expected: str) -> tuple[list[_Index], list[str], list[_ClassInfo]]:
        # A label outside the vocabulary (or no vocabulary at all) gets its own small index next to the main one.
        extra = self._single(expected)
        if self._index is None:
            return [extra], [expected], extra.infos
        return [self._index, extra], [*(self.classes or ()), expected], [*self._index.infos, *extra.infos]

    def _read(self, text: str, expected: str | None, fuzzy: bool = False) -> tuple[_Reading, list[str]]:
        """Mentions in one piece of text, resolved into positive groups, negated and violated classes."""
        norm = normalize_text(text)
        occ = _occurrences(norm)
        indexes, names, infos = self._indexes(expected)
        if fuzzy:
            occ = self._typo_corrected(occ, indexes)
        mentions: list[_Mention] = []
        offset = 0
        for index in indexes:
            for m in index.mentions(occ):
                if _SPAN_BREAK_RE.search(norm, m.start, m.end) or any(
                    _INNER_NEGATION_RE.search(norm, a[1], b[0]) for a, b in zip(m.spans, m.spans[1:])
                ):
                    # A class name does not run across a sentence, a contrast or a negation ("a burger, not a hot
                    # dog", "hugging (not baby)" is no "hugging baby").
                    continue
                info = index.infos[m.cls]
                m.cls += offset
                m.negated = is_negated(norm, m.start, m.end)
                m.violates = bool(info.exclusions) and self._violates(norm, occ, m, info)
                mentions.append(m)
            offset += len(index.infos)
        reading = self._resolve(norm, occ, mentions, infos)
        if text.rstrip(" *_").endswith("?"):
            # A question ("abseiling?") offers a guess without committing to it.
            reading.noncommittal = True
        return reading, names

    @staticmethod
    def _violates(norm: str, occ: Mapping[str, list[_Occ]], m: _Mention, info: _ClassInfo) -> bool:
        lo, hi = min(m.positions), max(m.positions)
        for excl in info.exclusions:
            for s in excl:
                for o in occ.get(s, ()):
                    # A word that names the class itself is no violation ("tying" a knot is not "a tie"); a word
                    # standing in for a class word is ("petting a cat" for "petting animal (not cat)").
                    if o[0] in m.literal:
                        continue
                    if lo - 1 <= o[0] <= hi + 4 and not is_negated(norm, o[2], o[3]):
                        return True
        return False

    def _typo_corrected(self, occ: dict[str, list[_Occ]], indexes: list[_Index]) -> dict[str, list[_Occ]]:
        vocab = [w for index in indexes for w in index.vocabulary]
        fixed = dict(occ)
        for s, places in occ.items():
            # Only single words of some length: short words and joined pairs make false friends ("canot").
            if len(s) < 5 or not s.isalpha() or places[0][0] != places[0][1]:
                continue
            hit = process.extractOne(s, vocab, scorer=fuzz.ratio, score_cutoff=self.threshold)
            if hit is not None and hit[0] != s:
                fixed.setdefault(hit[0], []).extend(places)
        return fixed

    @staticmethod
    def _resolve(
        norm: str, occ: Mapping[str, list[_Occ]], mentions: list[_Mention], infos: list[_ClassInfo]
    ) -> _Reading:
        if len(mentions) == 1 and not mentions[0].negated and not mentions[0].violates:
            # The common case: one asserted mention; only alternatives and hedges remain to be checked.
            m = mentions[0]
            after, before = clause_after(norm, m.end), clause_before(norm, m.start)
            alternative = bool(_OR_AFTER_RE.search(after) or _OR_BEFORE_RE.search(before))
            return _Reading([[m.cls]], set(), set(), {}, is_noncommittal(norm), alternative, m.end)
        dominated: dict[int, int] = {}

        # Overlapping mentions cannot both be meant: more words win, then more words named literally ("petting a
        # horse" is "petting horse" rather than "petting animal"), then the more compact mention, else a tie.
        def rank(m: _Mention) -> tuple[int, int, int, int, int]:
            # Then words in the class's order ("the person is punching a bag" is "punching bag"), then words
            # covered: "kite surfing" read as "kitesurfing" covers both of its words.
            return (-m.size, -m.exact, m.width - len(m.positions), -m.ordered, -len(m.positions))

        order = sorted(mentions, key=lambda m: (rank(m), m.start))
        kept: list[_Mention] = []
        for m in order:
            beaten = None
            for k in kept:
                if m.positions & k.positions and k.cls != m.cls and rank(k) < rank(m):
                    beaten = k
                    break
            if beaten is not None:
                if not beaten.negated and not beaten.violates:
                    dominated.setdefault(m.cls, beaten.cls)
                continue
            same = next((k for k in kept if k.cls == m.cls and m.positions & k.positions), None)
            if same is not None:
                # Two overlapping readings of one class ("straightening hair with a flat iron" is "ironing hair"
                # twice): together they cover both, so neither word is left for a shorter class.
                same.positions = same.positions | m.positions
                same.start, same.end = min(same.start, m.start), max(same.end, m.end)
                continue
            kept.append(m)
        kept.sort(key=lambda m: m.start)
        negated = {m.cls for m in kept if m.negated}
        violated = {m.cls for m in kept if m.violates and not m.negated}
        live = [m for m in kept if not m.negated and not m.violates]
        # Tied classes (same words, e.g. siblings that differ only in a positive qualifier) form one group.
        groups: list[tuple[frozenset[int], list[int], int, int]] = []
        for m in live:
            for g in groups:
                if g[0] == m.positions:
                    if m.cls not in g[1]:
                        g[1].append(m.cls)
                    break
            else:
                groups.append((m.positions, [m.cls], m.start, m.end))
        # One claim per class: "abseiling (rappelling)" or "breading or breadcrumbing" name one class twice.
        claims: list[tuple[list[int], int, int]] = []
        for _, classes, start, end in groups:
            if len(classes) > 1:
                bonus = [c for c in classes if infos[c].qualifier and _asserted(norm, occ, infos[c].qualifier)]
                classes = bonus or [c for c in classes if not infos[c].qualifier] or classes
            for i, (known, s, e) in enumerate(claims):
                if set(known) & set(classes):
                    claims[i] = (known, min(s, start), max(e, end))
                    break
            else:
                claims.append((classes, start, end))
        claims.sort(key=lambda c: c[1])
        alternative = False
        if len(claims) >= 2:
            # "X or Y", "X, though it could also be Y", and "X, with Y as a second guess".
            alternative = any(joined_by_alternative(norm, a[2], b[1]) for a, b in zip(claims, claims[1:])) or bool(
                offers_second_answer(norm[claims[-1][2] :])
            )
        elif claims:
            # "X or Y" where Y is outside the vocabulary.
            after, before = clause_after(norm, claims[0][2]), clause_before(norm, claims[0][1])
            alternative = bool(_OR_AFTER_RE.search(after) or _OR_BEFORE_RE.search(before))
        merged = [c[0] for c in claims]
        last_end = max((c[2] for c in claims), default=0)
        return _Reading(merged, negated, violated, dominated, is_noncommittal(norm), alternative, last_end)

    def _decide(self, conclusion: Conclusion, expected: str | None) -> tuple[_Reading, list[str], str]:
        """Read the conclusion sentence by sentence; fall back on earlier sentences if it names nothing.

        The first piece that names a class (asserted, negated or excluded) or refuses to commit decides. Typo
        tolerance is tried only when no piece names anything word for word.
        """
        if conclusion.designated:
            pieces = split_sentences(conclusion.text)[:4] or [conclusion.text]
        else:
            pieces = [conclusion.text] if conclusion.text else []
        extended = False
        for fuzzy in (False, True):
            k = 0
            while k < len(pieces):
                reading, names = self._read(pieces[k], expected, fuzzy=fuzzy)
                if reading.says_something:
                    return reading, names, pieces[k]
                k += 1
                if k == len(pieces) and not extended:
                    # Earlier sentences are split only when the conclusion itself names nothing.
                    extended = True
                    pieces = pieces + [p for p in conclusion.earlier() if p not in pieces]
        reading, names = self._read("", expected)
        return reading, names, pieces[0] if pieces else ""

    # -- public API ---------------------------------------------------------------------------------------------

    def predict(self, answer: str) -> str | None:
        """The class the answer's conclusion names, or None if it names none, several, or hedges.

        Args:
            answer: the model's answer.

        Returns:
            A vocabulary class name when the vocabulary is known; otherwise the normalised conclusion text.
        """
        conclusion = find_conclusion(answer)
        if self._index is None:
            text = normalize_text(conclusion.text).strip(" .!?:;,*")
            return text or None
        key = _verbatim_key(conclusion.text.strip(" \t*_.!")) if conclusion.text else None
        if key and self._verbatim.get(key):
            name = self._verbatim[key]
            if conclusion.after and self._offers_other(
                self._hedge_texts(conclusion, "", None), None, {self._class_ids[name]}
            ):
                return None
            return name
        reading, names, piece = self._decide(conclusion, None)
        if reading.noncommittal or reading.alternative or len(reading.positive) != 1:
            return None
        if self._offers_other(self._hedge_texts(conclusion, piece, reading), None, set(reading.positive[0])):
            return None
        return names[reading.positive[0][0]]

    def verify_field(self, answer: str, expected: str, name: str = "label") -> FieldVerdict:
        """Judge the answer's conclusion against the expected class.

        Args:
            answer: the model's answer (any string; huge ones are cut to their tail).
            expected: the label's class name.
            name: the label field, reported in the verdict.

        Returns:
            A `FieldVerdict` with reason `match`, `mismatch`, `near_miss`, `negated`, `qualifier`, `hedged`,
            `multiple` or `no_conclusion`.
        """
        expected = str(expected)
        conclusion = find_conclusion(answer)
        key = _verbatim_key(conclusion.text.strip(" \t*_.!")) if conclusion.text else None
        if key is not None and (key == _expected_key(expected) or self._verbatim.get(key) == expected):
            if not conclusion.after or not self._offers_other(
                self._hedge_texts(conclusion, "", None), expected, self._target(expected)
            ):
                return FieldVerdict(name, True, expected, expected, "match", f"The conclusion names {expected!r}.")
            return FieldVerdict(
                name, False, expected, expected, "hedged", f"The answer offers another class after {expected!r}."
            )
        reading, names, piece = self._decide(conclusion, expected)
        target = self._target(expected)
        snippet = piece.strip()[:200] or None
        groups = reading.positive
        found = "; ".join(names[g[0]] for g in groups) or snippet

        def verdict(passed: bool, reason: str, detail: str) -> FieldVerdict:
            return FieldVerdict(name, passed, expected, found, reason, detail)

        if not conclusion.text:
            return verdict(False, "no_conclusion", "The answer is empty or states no conclusion.")
        if reading.noncommittal:
            return verdict(False, "hedged", f"The conclusion does not commit to one class: {snippet!r}.")
        if len(groups) > 1:
            why = "offers alternatives" if reading.alternative else "names several classes"
            return verdict(False, "hedged" if reading.alternative else "multiple", f"The conclusion {why}: {found}.")
        if len(groups) == 1:
            if reading.alternative:
                return verdict(False, "hedged", f"The conclusion offers {found!r} as one of alternatives.")
            if target & set(groups[0]):
                if self._offers_other(self._hedge_texts(conclusion, piece, reading), expected, target):
                    return verdict(False, "hedged", f"The answer offers another class beside {expected!r}.")
                return verdict(True, "match", f"The conclusion names {expected!r}.")
            if target & reading.violated:
                return verdict(False, "qualifier", f"The conclusion names {found!r}, excluded by {expected!r}.")
            if target & set(reading.dominated):
                return verdict(
                    False, "near_miss", f"The conclusion names {found!r}, a different class than {expected!r}."
                )
            return verdict(False, "mismatch", f"The conclusion names {found!r}, not {expected!r}.")
        if target & set(reading.dominated):
            return verdict(False, "near_miss", f"The conclusion names a more specific class than {expected!r}.")
        if target & reading.violated:
            return verdict(False, "qualifier", f"The conclusion violates the qualifier of {expected!r}: {snippet!r}.")
        if target & reading.negated:
            return verdict(False, "negated", f"The conclusion negates or rejects {expected!r}: {snippet!r}.")
        if reading.negated:
            return verdict(False, "negated", f"The conclusion only rejects classes: {snippet!r}.")
        return verdict(False, "no_conclusion", f"The conclusion names no class: {snippet!r}.")
