"""Guards of a run directory: one `vstar cycle` at a time, and no silent change of settings on resume.

A second process on the same run directory would write the same chunk files and train into the same folder; a
resume with another model or learning rate would mix two runs' results under one config. `RunLock` refuses the
first (a lock file holding the owner's PID and host; a lock left by a killed process is taken over), and
`settings_changes` lists the second so the loop can stop with the differences.

```python
from vstar.rundir import settings_changes
settings_changes({"learning_rate": 1e-4, "num_cycles": 3}, {"learning_rate": 2e-4, "num_cycles": 5})
# [('learning_rate', 0.0001, 0.0002)]   (num_cycles may change: a run can be extended)
```
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Settings that do not change what a run produces: where it writes and publishes, how it logs and checkpoints,
# how long it runs and how fast it decodes. Any other difference means the resumed cycles would not be the same
# run's.
RESUME_SAFE_SETTINGS = frozenset(
    {
        "run_dir",
        "output_dir",
        "logging_dir",
        "num_cycles",
        "early_stop_patience",
        "early_stop_min_delta",
        "early_stop_metric",
        "final_retrain",
        "allow_config_change",
        "resume_from_hub",
        "hub_repo",
        "hub_dataset_repo",
        "hub_model_repo",
        "hub_base_model_repo",
        "hub_private",
        "hub_model_id",
        "hub_strategy",
        "hub_private_repo",
        "hub_always_push",
        "hub_revision",
        "push_to_hub",
        "push_merged",
        "embed_videos",
        "card_license",
        "card_citation",
        "report_to",
        "run_name",
        "disable_tqdm",
        "logging_steps",
        "logging_strategy",
        "logging_first_step",
        "logging_nan_inf_filter",
        "log_level",
        "log_level_replica",
        "log_on_each_node",
        "save_strategy",
        "save_steps",
        "save_total_limit",
        "save_only_model",
        "save_safetensors",
        "resume_from_checkpoint",
        "overwrite_output_dir",
        "dataloader_num_workers",
        "dataloader_prefetch_factor",
        "dataloader_persistent_workers",
        "dataloader_pin_memory",
        "generation_decode_workers",
        "clip_cache_mb",
        "ddp_timeout",
        "vllm_gpu_memory_utilization",
        "local_rank",
    }
)


def settings_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """The settings that differ between a run's saved config and the current one, except `RESUME_SAFE_SETTINGS`.

    Returns:
        `(name, saved value, current value)` for each difference, sorted by name; a setting missing on one side
        (a field added in a newer vstar) counts only when the other side is not its default-like empty value.
    """
    changes = []
    for name in sorted(set(saved) | set(current)):
        if name in RESUME_SAFE_SETTINGS or "token" in name:
            continue
        old, new = saved.get(name), current.get(name)
        if name not in saved or name not in current:
            if old in (None, False, "", [], {}) and new in (None, False, "", [], {}):
                continue
        if _normalised(old) != _normalised(new):
            changes.append((name, old, new))
    return changes


def _normalised(value: Any) -> Any:
    # YAML round trips turn tuples into lists and may write 1e-4 as a string: compare what the values mean.
    if isinstance(value, (list, tuple)):
        return [_normalised(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalised(v) for k, v in value.items()}
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return value


class SettingsChanged(ValueError):
    """A resumed run's settings differ from the saved ones in ways that change results."""


def check_resume_settings(saved_path: Path, current: Mapping[str, Any], allow: bool) -> None:
    """Stop when `current` differs from the run's saved `config.yaml` (unless `allow`); log the changes."""
    import yaml

    if not saved_path.exists():
        return
    saved = yaml.safe_load(saved_path.read_text()) or {}
    changes = settings_changes(saved, current)
    if not changes:
        return
    listing = "; ".join(f"{name}: {old!r} -> {new!r}" for name, old, new in changes)
    if allow:
        logger.warning("Resuming %s with changed settings (allowed): %s", saved_path.parent, listing)
        return
    raise SettingsChanged(
        f"{saved_path.parent} was run with other settings: {listing}. Resume with the saved settings "
        f"(vstar cycle --config {saved_path}), choose a new --run_dir, or pass --allow_config_change true to "
        "continue with the new ones."
    )


class RunLock:
    """An exclusive lock on a run directory, held by one process (the main process of a launch).

    The lock file holds the owner's PID and host. A lock whose process is gone (killed with `kill -9`, a crashed
    node) is stale and taken over; a live owner on this host makes `acquire` raise with its PID.

    Args:
        run_dir: the run directory.
    """

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / ".vstar.lock"
        self.held = False

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is None:  # the owner may be between creating the file and writing its PID
                    time.sleep(0.5)
                    owner = self._owner()
                if owner is not None and self._alive(owner):
                    raise RuntimeError(
                        f"{self.path.parent} is in use by another vstar process (pid {owner['pid']} on "
                        f"{owner['host']}): wait for it to finish, stop it, or use another --run_dir."
                    ) from None
                logger.warning(
                    "Taking over the lock of %s left by a process that is gone (%s).",
                    self.path.parent,
                    f"pid {owner['pid']}" if owner else "unreadable lock file",
                )
                try:
                    self.path.unlink()
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(me, handle)
            self.held = True
            return self
        raise RuntimeError(f"Could not lock {self.path.parent}: another process keeps taking the lock.")

    def release(self) -> None:
        if self.held:
            owner = self._owner()
            if owner and owner.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def _owner(self) -> dict[str, Any] | None:
        try:
            owner = json.loads(self.path.read_text())
            return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None
        except (OSError, ValueError):
            return None

    @staticmethod
    def _alive(owner: Mapping[str, Any]) -> bool:
        if owner.get("host") != socket.gethostname():
            return True  # a process on another node cannot be checked from here: never steal its lock
        if owner["pid"] == os.getpid():
            return False
        try:
            os.kill(owner["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return _not_zombie(owner["pid"])

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _not_zombie(pid: int) -> bool:
    # A killed child that its parent has not reaped yet still answers signal 0: its state says it is dead.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")
