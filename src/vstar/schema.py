"""Column schemas of the datasets the stages exchange (DESIGN.md section 3)."""

from __future__ import annotations

from collections.abc import Mapping

from datasets import Features, Value, Video


def source_features(label_features: Mapping[str, object]) -> Features:
    """One row per labeled clip: the shared columns, then the source's own typed label columns."""
    return Features(
        {
            "id": Value("string"),
            "video": Video(decode=False),
            "start": Value("float64"),
            "end": Value("float64"),
            "source": Value("string"),
            "split": Value("string"),
            **label_features,
        }
    )


MESSAGE = {
    "role": Value("string"),
    "content": [{"type": Value("string"), "text": Value("string")}],
}

VERIFICATION = {
    "passed": Value("bool"),
    "reason": Value("string"),
    "fields": [
        {
            "name": Value("string"),
            "passed": Value("bool"),
            "expected": Value("string"),
            "found": Value("string"),
            "reason": Value("string"),
            "detail": Value("string"),
        }
    ],
}

# One row per generated answer. `messages` is TRL's conversational format; the hint of a rationalized answer
# is never in it (the model must learn to reach the label without being told).
INSTRUCTION_FEATURES = Features(
    {
        "id": Value("string"),
        "video": Video(decode=False),
        "start": Value("float64"),
        "end": Value("float64"),
        "source": Value("string"),
        "task": Value("string"),
        "label": Value("string"),
        "question": Value("string"),
        "answer": Value("string"),
        "messages": [MESSAGE],
        "rationalized": Value("bool"),
        "cycle": Value("int32"),
        "verification": VERIFICATION,
        "generator": Value("string"),
    }
)

# What the generate stage writes: one row per (clip, attempt, sample); verification happens afterwards.
GENERATION_FEATURES = Features(
    {
        "id": Value("string"),
        "attempt": Value("string"),
        "sample": Value("int32"),
        "question": Value("string"),
        "prompt": Value("string"),
        "answer": Value("string"),
        "generator": Value("string"),
    }
)


def conversation(question: str, answer: str) -> list[dict]:
    """A user turn with the video and the question, then the assistant's answer (TRL conversational format)."""
    return [
        {"role": "user", "content": [{"type": "video", "text": None}, {"type": "text", "text": question}]},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]
