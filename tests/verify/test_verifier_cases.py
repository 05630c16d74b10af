"""Agreement of the verifiers with hand-labelled verdicts (`cases.yaml`).

Run: `PYTHONPATH=src python -m pytest tests/verify/test_verifier_cases.py -q -s` (prints the agreement).
"""

from __future__ import annotations

from collections import Counter
from functools import cache
from pathlib import Path

import pytest
import yaml

from vstar.tasks import get_task

CASES_FILE = Path(__file__).with_name("cases.yaml")
MIN_AGREEMENT = 0.97


def load_cases() -> list[dict]:
    return yaml.safe_load(CASES_FILE.read_text(encoding="utf-8"))["cases"]


@cache
def task_for(name: str, classes: tuple[str, ...] | None):
    if name == "action_recognition":
        return get_task(name, classes=list(classes) if classes is not None else None)
    return get_task(name)


def run_case(case: dict):
    classes = tuple(case["classes"]) if case.get("classes") is not None else None
    task = task_for(case["task"], classes)
    return task.verify(case["answer"], case["label"])


def test_case_file_is_balanced_and_large():
    cases = load_cases()
    counts = Counter(c["expect"] for c in cases)
    assert len(cases) >= 150
    assert set(counts) == {"accept", "reject"}
    assert abs(counts["accept"] - counts["reject"]) <= 0.1 * len(cases), counts
    for case in cases:
        assert case["task"] in {"action_recognition", "action_quality"}
        assert case["answer"] is not None and case["kind"], case


def test_verifier_agrees_with_human_judgement():
    cases = load_cases()
    disagreements = []
    per_task: Counter = Counter()
    per_task_ok: Counter = Counter()
    for i, case in enumerate(cases):
        verdict = run_case(case)
        expected = case["expect"] == "accept"
        per_task[case["task"]] += 1
        if verdict.passed == expected:
            per_task_ok[case["task"]] += 1
        else:
            disagreements.append(
                f"#{i} [{case['task']}/{case['kind']}] expected {case['expect']}, got {verdict.reason}: "
                f"{case['answer'][-120:]!r} (label {case['label']})"
            )
    agreement = 1 - len(disagreements) / len(cases)
    breakdown = ", ".join(f"{t}: {per_task_ok[t]}/{n}" for t, n in sorted(per_task.items()))
    print(f"\nverifier agreement with human verdicts: {agreement:.1%} of {len(cases)} cases ({breakdown})")
    for line in disagreements:
        print("  disagreement:", line)
    assert agreement >= MIN_AGREEMENT, "\n".join([f"agreement {agreement:.1%} < {MIN_AGREEMENT:.0%}", *disagreements])


@pytest.mark.parametrize("reason_case", ["near_miss", "qualifier_violated", "negated"])
def test_rejections_carry_a_reason(reason_case):
    cases = [c for c in load_cases() if c["kind"] == reason_case and c["expect"] == "reject"]
    assert cases
    for case in cases:
        verdict = run_case(case)
        field = verdict.fields["label"]
        assert not field.passed and field.reason != "match" and field.detail


def test_hedged_conclusions_fail_as_hedged():
    # "hedge" kinds offer alternatives (two classes, two scores, a second estimate): each fails with reason
    # `hedged`, and the look-alikes that commit to one answer pass.
    cases = load_cases()
    hedges = [c for c in cases if "hedge" in c["kind"] and c["expect"] == "reject"]
    look_alikes = [c for c in cases if c["kind"].startswith("not_a_hedge")]
    assert len(hedges) >= 40 and len(look_alikes) >= 14
    for case in hedges:
        verdict = run_case(case)
        assert any(f.reason == "hedged" for f in verdict.fields.values()), (case["answer"], verdict.reason)
    for case in look_alikes:
        assert run_case(case).passed, (case["answer"], run_case(case).reason)
