"""Which checkpoint a killed training run resumes from."""

import json

from vstar.train.sft import latest_checkpoint


def test_newest_complete_checkpoint_is_chosen(tmp_path):
    assert latest_checkpoint(tmp_path / "missing", "last") is None
    assert latest_checkpoint(tmp_path, "last") is None
    for step in (2, 4, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    # checkpoint-12 was being written when the run was killed; checkpoint-10 sorts after checkpoint-4 by number.
    (tmp_path / "checkpoint-12").mkdir()
    (tmp_path / "checkpoint-12" / "adapter_model.safetensors").write_bytes(b"")
    assert latest_checkpoint(tmp_path, "last") == str(tmp_path / "checkpoint-10")
    (tmp_path / "checkpoint-12" / "trainer_state.json").write_text('{"global_st')  # cut short mid-write
    assert latest_checkpoint(tmp_path, "last") == str(tmp_path / "checkpoint-10")
    # An explicit path, or none, is passed through.
    assert latest_checkpoint(tmp_path, str(tmp_path / "checkpoint-2")) == str(tmp_path / "checkpoint-2")
    assert latest_checkpoint(tmp_path, None) is None
