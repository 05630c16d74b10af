"""Seeded chaos: `vstar cycle` killed with SIGKILL at random instants, resumed, ends exactly as an uninterrupted run.

The kill points are drawn from the whole run (loading, generation, verification, training with checkpoints and their
cleanup, evaluation, cards), so over the trials every stage is interrupted somewhere; the final rows, the stage
results, the held-out metrics and the adapter's bytes must equal those of a run that was never stopped.
"""

import json
import random
import signal
import time

import pytest
from test_cycle import _launch, count_rows

TRIALS = 2
KILLS_PER_TRIAL = 1


def _final(run_dir):
    state = json.loads((run_dir / "state.json").read_text())["stages"]
    metrics = json.loads((run_dir / "metrics.json").read_text())["cycles"]
    adapter = (run_dir / "cycle-1" / "model" / "adapter_model.safetensors").read_bytes()
    heldout = [{k: v for k, v in c.items() if k.startswith("heldout")} for c in metrics]
    return {
        "rows": count_rows(run_dir),
        "assemble": state["cycle-1/assemble"],
        "steps": state["cycle-1/train"]["global_step"],
        "heldout": heldout,
        "adapter": adapter,
    }


@pytest.mark.slow
def test_random_kills_then_resume_match_an_uninterrupted_run(warm_models, shapes_dir, tmp_path):
    model = warm_models["qwen2_5_vl"]
    began = time.monotonic()
    assert _launch(tmp_path / "reference", shapes_dir, model, tmp_path / "reference.log").wait() == 0
    duration = time.monotonic() - began
    reference = _final(tmp_path / "reference")

    rng = random.Random(20261202)
    kills = 0
    for trial in range(TRIALS):
        run = tmp_path / f"trial-{trial}"
        for attempt in range(KILLS_PER_TRIAL):
            log = tmp_path / f"trial-{trial}-{attempt}.log"
            process = _launch(run, shapes_dir, model, log)
            # Past the ~5 s of imports, anywhere up to (nearly) the time a whole run takes.
            time.sleep(rng.uniform(min(5.0, duration / 4), 0.9 * duration))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                kills += 1
            process.wait()
        log = tmp_path / f"trial-{trial}-final.log"
        assert _launch(run, shapes_dir, model, log).wait() == 0, log.read_text()[-3000:]
        result = _final(run)
        assert result["rows"] == reference["rows"]
        assert result["assemble"] == reference["assemble"]
        assert result["steps"] == reference["steps"]
        assert result["heldout"] == reference["heldout"]
        assert result["adapter"] == reference["adapter"], f"trial {trial}: the adapter differs"
        assert not list((run / "cycle-1" / "model").glob("checkpoint-*"))
    assert kills >= TRIALS  # the draw must really interrupt runs
