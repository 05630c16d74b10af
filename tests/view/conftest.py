"""Fixtures of the viewer's tests: the second path's datasets, written once."""

from pathlib import Path

import pytest
from view_datasets import caption_dataset, instruction_dataset, llava_dataset, qa_dataset, selection_dataset


@pytest.fixture(scope="session")
def second_path(tmp_path_factory) -> dict[str, Path]:
    """Dataset directories by kind: QA, captions, a selection, a run's instructions, imported LLaVA-Video QA rows
    (`view_datasets`)."""
    root = tmp_path_factory.mktemp("second-path")
    return {
        "qa": qa_dataset(root),
        "captions": caption_dataset(root),
        "selected": selection_dataset(root),
        "instructions": instruction_dataset(root),
        "llava": llava_dataset(root),
    }
