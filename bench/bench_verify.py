"""Verification throughput per task on one core, against a naive fuzzy matcher measured in the same run.

The naive baseline is what the official Video-STaR verifier does: fuzzy-match the whole answer against every
class (`rapidfuzz.fuzz.partial_ratio`) and take the best class. The action recognition benchmark uses a 700-class
vocabulary (the Kinetics-700 list when `../shared/data/kinetics/k700_labels.txt` exists, else a synthetic one).

Run: `PYTHONPATH=src python bench/bench_verify.py [--seconds 3.0]`; the numbers are also written to
`bench/results.json` (keys `verify_action_recognition_per_s`, `verify_action_quality_per_s`, `verify_ar_vs_naive`).
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rapidfuzz import fuzz, process
from results import record

from vstar.tasks import get_task

HERE = Path(__file__).resolve().parent
K700 = HERE.parents[1] / "shared" / "data" / "kinetics" / "k700_labels.txt"

REASONING = [
    "The video opens on a wide shot of an outdoor scene in daylight.",
    "A person is visible in the center of the frame and moves steadily throughout the clip.",
    "The camera follows the main subject, and the background stays mostly static.",
    "Several objects relevant to the activity are visible, and the person's hands are busy with them.",
    "There is no sign of a competition or an audience, so this looks like an everyday activity.",
    "The motion repeats a few times, which is typical of this kind of action.",
]
TEMPLATES = [
    "{reasoning}\nAnswer: {name}",
    "{reasoning}\n\n**Final Answer:** {name}",
    "{reasoning} Therefore, the person is {name}.",
    "{reasoning} It is not {other}; rather, it is {name}.\nAnswer: {name}",
    "{reasoning}\nAnswer: {other}",
    "{reasoning}\nAnswer: {name} or {other}",
    "{reasoning} So the answer is {name}. I hope this helps!",
]


def _dive(code: str, difficulty: float, score: float, *sub_actions: str) -> dict:
    return {"action_type": code, "difficulty": difficulty, "dive_score": score, "sub_actions": list(sub_actions)}


DIVES = [
    _dive("407c", 3.2, 88.0, "Inward", "3.5 Soms.Tuck", "Entry"),
    _dive("5253b", 3.2, 75.2, "Back", "1.5 Twists", "2.5 Soms.Pike", "Entry"),
    _dive("107b", 3.0, 73.5, "Forward", "3.5 Soms.Pike", "Entry"),
]
DIVE_ANSWERS = [
    "The diver takes off and rotates quickly with a compact body.\nAnswer: action sequence: {seq}. action difficulty: "
    "{dd}. final score: {score}",
    "The judges would reward the clean entry; the rotation is complete. Final answer: {words}, difficulty {dd}, final "
    "score {score}.",
    "The splash is large and the rotation short, so the score is lower.\nAnswer: action sequence: {seq}. action "
    "difficulty: {dd}. final score: {low}",
    "The dive is hard to judge from this angle. It has several somersaults. The score is between 60 and 80.",
]
WORDS = {
    "407c": "inward three and a half somersaults in the tuck position, entry",
    "5253b": "back, one and a half twists, two and a half somersaults piked, entry",
    "107b": "forward 3½ somersaults pike, entry",
}


def pin_to_one_core() -> None:
    """Measure on one core: pin the process when the platform allows it."""
    if hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        except OSError:
            pass


def vocabulary() -> tuple[list[str], str]:
    if K700.exists():
        classes = [line.strip() for line in K700.read_text(encoding="utf-8").splitlines() if line.strip()]
        return classes, "kinetics-700"
    rng = random.Random(0)
    verbs = "playing riding throwing catching cutting eating making washing pushing climbing".split()
    nouns = [f"{a}{b}" for a in "bcdfghklmnprstvw" for b in ("all", "ark", "ice", "ope", "ug", "ent", "ill")]
    names = sorted({f"{rng.choice(verbs)} {rng.choice(nouns)}" for _ in range(5000)})[:700]
    return names, "synthetic-700"


def recognition_answers(classes: Sequence[str], n: int, seed: int = 0) -> list[tuple[str, dict]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        name, other = rng.sample(list(classes), 2)
        reasoning = " ".join(rng.sample(REASONING, 4))
        answer = rng.choice(TEMPLATES).format(reasoning=reasoning, name=name, other=other)
        out.append((answer, {"label": name}))
    return out


def quality_answers(n: int, seed: int = 0) -> list[tuple[str, dict]]:
    # Every answer is distinct (its reasoning and numbers vary), so no cache can serve a repeat.
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        base = rng.choice(DIVES)
        score = round(rng.uniform(30.0, 100.0), 1)
        label = {**base, "dive_score": score}
        reasoning = " ".join(rng.sample(REASONING, 3))
        template = rng.choice(DIVE_ANSWERS)
        answer = (
            reasoning
            + " "
            + template.format(
                seq=", ".join(label["sub_actions"]),
                words=WORDS[label["action_type"]],
                dd=label["difficulty"],
                score=round(score * rng.uniform(0.97, 1.03), 1),
                low=round(score * 0.8, 1),
            )
        )
        out.append((answer, label))
    return out


def throughput(fn: Callable[[str, dict], object], items: Sequence[tuple[str, dict]], seconds: float) -> float:
    """Calls per CPU-second of `fn`: the best of repeated passes over `items` within about `seconds` of CPU time.

    CPU time of this process (not wall time) is what "per second on one core" means when other processes share
    the machine; the best pass is the least disturbed one (as `timeit` recommends for repeats).
    """
    for answer, label in items[:20]:  # warm caches
        fn(answer, label)
    best = 0.0
    deadline = time.process_time() + seconds
    while True:
        start = time.process_time()
        for answer, label in items:
            fn(answer, label)
        now = time.process_time()
        best = max(best, len(items) / max(now - start, 1e-9))
        if now >= deadline:
            return best


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="CPU time per measurement")
    parser.add_argument("--answers", type=int, default=500, help="distinct answers per task")
    args = parser.parse_args(argv)
    pin_to_one_core()

    classes, source = vocabulary()
    ar = get_task("action_recognition", classes=classes)
    aq = get_task("action_quality")
    ar_items = recognition_answers(classes, args.answers)
    aq_items = quality_answers(args.answers)

    def naive(answer: str, label: dict) -> bool:
        best = process.extractOne(answer, classes, scorer=fuzz.partial_ratio)
        return best is not None and best[1] > 85 and best[0] == label["label"]

    ar_rate = throughput(ar.verify, ar_items, args.seconds)
    naive_rate = throughput(naive, ar_items, args.seconds)
    aq_rate = throughput(aq.verify, aq_items, args.seconds)

    results = {
        "verify_action_recognition_per_s": round(ar_rate, 1),
        "verify_action_quality_per_s": round(aq_rate, 1),
        "verify_ar_vs_naive": round(ar_rate / naive_rate, 2),
    }
    print(f"vocabulary: {source} ({len(classes)} classes), {args.answers} distinct answers per task, one core")
    print(f"action_recognition: {ar_rate:,.0f} verifications/s")
    print(f"naive partial_ratio baseline: {naive_rate:,.0f} verifications/s")
    print(f"ratio vs naive: {ar_rate / naive_rate:.1f}x")
    print(f"action_quality: {aq_rate:,.0f} verifications/s")

    return record(results)


if __name__ == "__main__":
    main()
