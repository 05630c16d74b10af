"""The inputs of the caption flywheel's demo, built offline: shapes clips, a caption-format teacher, a colour scorer.

`build_flywheel_inputs(dir)` writes `dir/shapes` (the shapes source dataset, `vstar.sources.shapes`), `dir/teacher`
(the tiny Qwen2.5-VL trained to answer `vstar caption`'s prompts in format, `vstar.testing.teachers`) and
`dir/scorer` (a tiny CLIP taught the shapes' colours by `vstar train-scorer`'s trainer on synthetic clip-caption
pairs, `vstar.testing.scorers`). About a minute on one CPU thread; each part is reused when already there.

```bash
python -m vstar.testing.flywheel_demo runs/flywheel-demo
vstar flywheel --config recipes/demo/config_flywheel_shapes_tiny.yaml
```
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def build_flywheel_inputs(
    root: str | Path, num_clips: int = 24, scorer_steps: int = 120, seed: int = 0
) -> dict[str, Path]:
    """Build (or reuse) the demo's source clips, starting model and scorer under `root`.

    Args:
        root: the folder.
        num_clips: shapes clips in the train split.
        scorer_steps: optimizer steps of the scorer's contrastive training.
        seed: the seed of the clips, the teacher and the scorer.

    Returns:
        `{"source": ..., "teacher": ..., "scorer": ...}`.
    """
    from vstar.sources.shapes import COLORS, build_shapes
    from vstar.testing.scorers import build_colour_pairs, build_tiny_scorer, colour_caption
    from vstar.testing.teachers import build_format_teacher
    from vstar.train.scorer import ScorerTrainConfig, train_scorer

    root = Path(root)
    source = root / "shapes"
    if not (source / "README.md").is_file():
        build_shapes(output=str(source), num_train=num_clips, num_validation=0, num_test=0, seed=seed)
    teacher = build_format_teacher(root / "teacher", seed=seed)
    scorer = root / "scorer"
    if not (scorer / "config.json").is_file():
        pairs = build_colour_pairs(root / "scorer-pairs", num_train=160, name_direction=False, seed=seed + 5)
        base = build_tiny_scorer(root / "scorer-base", "clip", corpus=[colour_caption(c) for c in COLORS], seed=seed)
        train_scorer(
            ScorerTrainConfig(
                pairs=str(pairs),
                model=str(base),
                output=str(scorer),
                max_steps=scorer_steps,
                batch_size=16,
                learning_rate=2e-3,
                torch_threads=1,
            )
        )
    return {"source": source, "teacher": teacher, "scorer": scorer}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default="runs/flywheel-demo")
    parser.add_argument("--num_clips", type=int, default=24)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    import torch

    torch.set_num_threads(1)
    for name, path in build_flywheel_inputs(args.root, args.num_clips).items():
        logger.info("%s: %s", name, path)


if __name__ == "__main__":
    main()
