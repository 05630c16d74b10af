"""Fixtures of the caption tests: the format-trained tiny teacher, and source datasets of real mp4 files."""

from __future__ import annotations

from pathlib import Path

import pytest
from caption_scripts import FILE_FPS, scripted_frames


@pytest.fixture(scope="session")
def format_teacher(tmp_path_factory) -> Path:
    """The tiny VLM trained to answer caption and QA prompts in format (`vstar.testing.teachers`; test_qa.py runs
    `vstar qa` on its QA JSON)."""
    from vstar.testing.teachers import build_format_teacher

    return build_format_teacher(tmp_path_factory.mktemp("teacher") / "format-teacher", qa=True)


@pytest.fixture(scope="session")
def long_video(tmp_path_factory) -> Path:
    from vstar.video import write_video

    return write_video(tmp_path_factory.mktemp("videos") / "scripted.mp4", scripted_frames(), fps=FILE_FPS)
