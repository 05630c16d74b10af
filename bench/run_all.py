"""Run every benchmark in `bench/` (each prints ratios against a baseline measured in the same run) and print
the collected `bench/results.json`.

```bash
make bench
```
"""

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def main() -> int:
    failed = []
    for script in sorted(BENCH.glob("bench_*.py")):
        print(f"== {script.name}", flush=True)
        if subprocess.run([sys.executable, str(script)], cwd=BENCH.parent).returncode != 0:
            failed.append(script.name)
    results = BENCH / "results.json"
    if results.exists():
        print(json.dumps(json.loads(results.read_text()), indent=2))
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
