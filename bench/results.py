"""`bench/results.json`: every benchmark merges its numbers in by name."""

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results.json"


def record(numbers: dict, quick: bool = False) -> dict:
    """Merge `numbers` into results.json (read-modify-write, keys sorted); returns them.

    A quick run (a smoke test on small inputs) records nothing.
    """
    if quick:
        print("quick run: nothing recorded")
        return numbers
    existing = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.exists() else {}
    existing.update(numbers)
    RESULTS.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return numbers
