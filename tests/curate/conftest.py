"""Fixtures of the curation tests: the synthetic long video (see `split_fixtures`), written once per session."""

from __future__ import annotations

import pytest
from split_fixtures import LongVideo, make_long_video


@pytest.fixture(scope="session")
def long_video(tmp_path_factory) -> LongVideo:
    """38 s at 15 fps, 128 x 72: six hard cuts, one cross-fade, a static shot and a 12 s shot."""
    return make_long_video(tmp_path_factory.mktemp("long") / "long.mp4")
