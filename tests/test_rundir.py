"""A run directory takes one `vstar cycle` at a time, and a resume with result-changing settings stops."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from vstar.rundir import RunLock, SettingsChanged, check_resume_settings, settings_changes


def test_settings_changes_ignore_what_does_not_change_results():
    saved = {"learning_rate": "1e-4", "num_cycles": 3, "model_name_or_path": "a", "logging_steps": 10}
    current = {"learning_rate": 1e-4, "num_cycles": 5, "model_name_or_path": "a", "logging_steps": 50}
    assert settings_changes(saved, current) == []
    current.update(learning_rate=2e-4, model_name_or_path="b")
    assert settings_changes(saved, current) == [("learning_rate", "1e-4", 2e-4), ("model_name_or_path", "a", "b")]
    # A field added by a newer version, at its empty default, is no change.
    assert settings_changes(saved, {**saved, "final_retrain": False, "new_field": None}) == []


def test_resume_with_other_settings_stops_with_the_differences(tmp_path, caplog):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"learning_rate": 1e-4, "task": "shapes"}))
    with pytest.raises(SettingsChanged) as error:
        check_resume_settings(tmp_path / "config.yaml", {"learning_rate": 3e-4, "task": "shapes"}, allow=False)
    assert "learning_rate: 0.0001 -> 0.0003" in str(error.value) and "--allow_config_change" in str(error.value)
    check_resume_settings(tmp_path / "config.yaml", {"learning_rate": 3e-4, "task": "shapes"}, allow=True)
    assert "changed settings (allowed)" in caplog.text


def test_cycle_refuses_a_changed_learning_rate_before_any_work(shapes_dir, tmp_path):
    from loop_helpers import small_cycle_config, training_config

    from vstar.configs import save_config
    from vstar.cycle import CycleRunner

    config = small_cycle_config(tmp_path, shapes_dir)
    save_config(tmp_path / "config.yaml", config, training_config(model_name_or_path="m", learning_rate=1e-3))
    runner = CycleRunner(config, training_config(model_name_or_path="m", learning_rate=5e-3))
    with pytest.raises(SettingsChanged, match="learning_rate"):
        runner.run()
    assert not (tmp_path / "cycle-0").exists()
    assert not (tmp_path / ".vstar.lock").exists()  # the lock is released on the way out


HOLDER = """
import sys, time
from vstar.rundir import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_second_process_is_refused_and_a_killed_owner_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RuntimeError, match=f"pid {holder.pid}"):
            RunLock(tmp_path).acquire()
        os.kill(holder.pid, signal.SIGKILL)  # kill -9: the lock file stays behind
        holder.wait()
        assert json.loads((tmp_path / ".vstar.lock").read_text())["pid"] == holder.pid
        with RunLock(tmp_path) as lock:
            assert lock.held
            assert json.loads((tmp_path / ".vstar.lock").read_text())["pid"] == os.getpid()
        assert not (tmp_path / ".vstar.lock").exists()
    finally:
        holder.kill()
        holder.wait()


def test_killed_child_not_yet_reaped_counts_as_gone(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    os.kill(holder.pid, signal.SIGKILL)
    time.sleep(0.5)  # a zombie until waited for
    try:
        with RunLock(tmp_path) as lock:
            assert lock.held
    finally:
        holder.wait()
