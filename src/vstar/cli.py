"""The `vstar` command line: `vstar build|generate|verify|train|cycle|eval|push|demo`.

Every command takes `--config recipe.yaml` plus `--field value` overrides of its typed settings; `vstar CMD
--help` lists them.

```bash
vstar build shapes --output data/shapes
vstar cycle --config recipes/demo/config_shapes_tiny.yaml --run_dir runs/shapes
accelerate launch --config_file recipes/accelerate_configs/multi_gpu.yaml -m vstar.cli train --config ...
vstar demo --output-dir runs/demo
```
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

logger = logging.getLogger("vstar")

USAGE = """usage: vstar <command> [--config RECIPE.yaml] [--field value ...]

commands:
  build SOURCE   build a source dataset (sources: {sources})
  generate       answer a task's questions about a dataset's clips (resumable, sharded by rank)
  verify         judge generated answers against the labels
  train          LoRA/full SFT of a video LLM on an instruction dataset
  cycle          run or resume the Video-STaR loop
  eval           evaluate a model on a held-out split
  push RUN_DIR   publish a local run's cycles to the Hub (tags cycle-<k>)
  demo           the whole loop on synthetic clips and a tiny offline model
"""


def _normalise_flags(argv: list[str]) -> list[str]:
    # `--output-dir` and `--output_dir` both work: dataclass fields use underscores.
    normalised = []
    for arg in argv:
        if arg.startswith("--"):
            name, sep, value = arg[2:].partition("=")
            arg = "--" + name.replace("-", "_") + sep + value
        normalised.append(arg)
    return normalised


_BOOLEAN_WORDS = {"true", "false", "yes", "no", "1", "0"}


def _hub_flags(argv: list[str]) -> list[str]:
    # `--push_to_hub ORG/NAME` names the repo; `trl.SFTConfig.push_to_hub` is a boolean of the inner trainer.
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--push_to_hub" and i + 1 < len(out) and out[i + 1].lower() not in _BOOLEAN_WORDS:
            out[i] = "--hub_repo"
        elif arg.startswith("--push_to_hub=") and arg.split("=", 1)[1].lower() not in _BOOLEAN_WORDS:
            out[i] = "--hub_repo=" + arg.split("=", 1)[1]
    return out


def _setup_logging() -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(show_path=False)])
    for noisy in ("httpx", "httpcore", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def parse_build_args(name: str, argv: list[str]):
    """The builder's settings and the Hub target of `vstar build NAME ARGS...`.

    A setting the builder defines itself (FineDiving's `embed_videos`, how the local copy stores its videos) belongs
    to the builder; the Hub target keeps its own default for it.

    Args:
        name: a registered source name.
        argv: the flags after the source name.
    """
    from dataclasses import asdict, field, fields, make_dataclass
    from typing import get_type_hints

    from vstar.configs import parse_configs
    from vstar.hub import HubTarget
    from vstar.sources import builder_config

    config_class = builder_config(name)
    taken = {f.name for f in fields(config_class)}
    target_class = HubTarget
    if taken & {f.name for f in fields(HubTarget)}:
        hints = get_type_hints(HubTarget)
        kept = [
            (f.name, hints[f.name], field(default=f.default, metadata=f.metadata))
            for f in fields(HubTarget)
            if f.name not in taken
        ]
        target_class = make_dataclass("HubTarget", kept)
    config, target = parse_configs((config_class, target_class), _hub_flags(argv))
    return config, target if isinstance(target, HubTarget) else HubTarget(**asdict(target))


def cmd_build(argv: list[str]) -> None:
    from vstar.sources import SOURCES

    if not argv or argv[0].startswith("-"):
        raise SystemExit(f"vstar build needs a source name: {', '.join(SOURCES.names())}")

    name, rest = argv[0], argv[1:]
    builder = SOURCES.get(name)
    config, target = parse_build_args(name, rest)
    output = builder(config)
    if target.hub_repo:
        sha = target.publisher().push_dataset_dir(output, target.hub_repo, message=f"vstar build {name}")
        logger.info("Pushed %s to %s@%s", output, target.hub_repo, sha[:8])


def cmd_generate(argv: list[str]) -> None:
    from vstar.stages import generate_main

    generate_main(argv)


def cmd_verify(argv: list[str]) -> None:
    from vstar.stages import verify_main

    verify_main(argv)


def cmd_train(argv: list[str]) -> None:
    from vstar.configs import parse_configs
    from vstar.train.sft import VStarSFTConfig, train

    (config,) = parse_configs((VStarSFTConfig,), argv)
    train(config)


def cmd_cycle(argv: list[str]) -> None:
    from vstar.configs import CycleConfig, parse_configs
    from vstar.cycle import CycleRunner
    from vstar.demo import print_table
    from vstar.distributed import is_main_process
    from vstar.train.sft import VStarSFTConfig

    cycle_config, train_config = parse_configs((CycleConfig, VStarSFTConfig), _hub_flags(argv))
    history = CycleRunner(cycle_config, train_config).run()
    if is_main_process():
        print_table(history)


def cmd_push(argv: list[str]) -> None:
    from vstar.push import main

    main(_hub_flags(argv))


def cmd_eval(argv: list[str]) -> None:
    from vstar.evaluate.cli import main

    main(argv)


def cmd_demo(argv: list[str]) -> None:
    from vstar.demo import main

    main(_hub_flags(argv))


COMMANDS: dict[str, Callable[[list[str]], None]] = {
    "build": cmd_build,
    "generate": cmd_generate,
    "verify": cmd_verify,
    "train": cmd_train,
    "cycle": cmd_cycle,
    "eval": cmd_eval,
    "demo": cmd_demo,
    "push": cmd_push,
}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        from vstar.sources import SOURCES

        print(USAGE.format(sources=", ".join(SOURCES.names())))
        if argv and argv[0] not in ("-h", "--help"):
            raise SystemExit(f"Unknown command {argv[0]!r}.")
        return
    _setup_logging()
    COMMANDS[argv[0]](_normalise_flags(argv[1:]))


if __name__ == "__main__":
    main()
