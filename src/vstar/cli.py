"""The `vstar` command line: the loop's stages (`build|generate|verify|assemble|train|cycle|eval|push|demo`) and the
second path's (`split|caption|select|qa|export|train-scorer|flywheel|grpo|view`).

Every command takes `--config recipe.yaml` plus `--field value` overrides of its typed settings; `vstar CMD
--help` lists them, vstar's own first. One recipe serves every command: keys of the other commands are skipped.
A bad input stops the command with one line naming it and the fix (exit status 2); `--debug` (or `VSTAR_DEBUG=1`)
adds the traceback.

```bash
vstar build shapes --output data/shapes
vstar cycle --config recipes/demo/config_shapes_tiny.yaml --run_dir runs/shapes
vstar eval --config recipes/demo/config_shapes_tiny.yaml --model runs/shapes/cycle-1/model
accelerate launch --config_file recipes/accelerate_configs/multi_gpu.yaml -m vstar.cli train --config ...
vstar demo --output-dir runs/demo
```
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from vstar import __version__
from vstar.errors import EXIT_INTERNAL, EXIT_USAGE, ConfigError, debug_enabled, did_you_mean, user_message

logger = logging.getLogger("vstar")

USAGE = """usage: vstar <command> [--config RECIPE.yaml] [--field value ...] [--debug]

commands:
  build SOURCE   build a source dataset (sources: {sources})
  generate       answer a task's questions about a dataset's clips (resumable, sharded by rank)
  verify         judge generated answers against the labels
  assemble       verified answers -> a cycle's instruction dataset (as `vstar cycle` writes it)
  train          LoRA/full SFT of a video LLM on an instruction dataset
  cycle          run or resume the Video-STaR loop
  eval           evaluate a model on a held-out split
  push RUN_DIR   publish a local run's cycles to the Hub (tags cycle-<k>)
  demo           the whole loop on synthetic clips and a tiny offline model

second path (curation, synthesis, noise-robust training, RL):
  split          cut long videos into single-scene clips (PySceneDetect or TransNetV2, then stitching)
  caption        three-level recursive captions of every clip from one or more teachers
  select         score candidate captions with a video-text model and keep the best per clip
  qa             question-answer pairs of 16 types from captions (open-ended and multiple choice)
  export         write an instruction dataset as LLaVA-Video conversation JSON
  train-scorer   fine-tune a video-text scorer (InfoNCE or MAMA's angular margin)
  flywheel       the caption flywheel: caption, select, train on what is kept, caption again
  grpo           reinforcement learning with the task's verifier as the reward (TRL GRPO on video)
  view           browse a run's answers beside their clips in the browser (Gradio)

`vstar <command> --help` lists a command's settings; `vstar --version` prints the version.
--debug (or VSTAR_DEBUG=1) shows the traceback of an error.
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
# Values of the trainer's own `--debug` setting (transformers' DebugOption); a bare `--debug` is vstar's.
_TRAINER_DEBUG_OPTIONS = {"underflow_overflow", "tpu_metrics_debug"}


def _hub_flags(argv: list[str]) -> list[str]:
    # `--push_to_hub ORG/NAME` names the repo; `trl.SFTConfig.push_to_hub` is a boolean of the inner trainer.
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--push_to_hub" and i + 1 < len(out) and out[i + 1].lower() not in _BOOLEAN_WORDS:
            out[i] = "--hub_repo"
        elif arg.startswith("--push_to_hub=") and arg.split("=", 1)[1].lower() not in _BOOLEAN_WORDS:
            out[i] = "--hub_repo=" + arg.split("=", 1)[1]
    return out


def _pop_debug(argv: list[str]) -> tuple[list[str], bool]:
    """Remove vstar's `--debug` switch; the trainer's `--debug underflow_overflow` stays."""
    out, debug = [], False
    for i, arg in enumerate(argv):
        following = argv[i + 1] if i + 1 < len(argv) else ""
        if arg == "--debug" and not set(following.split()) & _TRAINER_DEBUG_OPTIONS:
            debug = True
            continue
        out.append(arg)
    return out, debug


def _setup_logging(debug: bool = False) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(show_path=False)])
    if debug:
        logger.setLevel(logging.DEBUG)
    for noisy in ("httpx", "httpcore", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _wants_help(argv: list[str]) -> bool:
    return "-h" in argv or "--help" in argv


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
        target_class = make_dataclass("HubTarget", kept, namespace={"__doc__": HubTarget.__doc__})
    config, target = parse_configs((config_class, target_class), _hub_flags(argv))
    return config, target if isinstance(target, HubTarget) else HubTarget(**asdict(target))


def _build_usage(sources) -> str:
    lines = ["usage: vstar build SOURCE [--config RECIPE.yaml] [--field value ...]", "", "sources:"]
    for name in sources.names():
        doc = (getattr(sources.get(name), "__doc__", None) or "").strip().splitlines()
        lines.append(f"  {name:<12} {doc[0] if doc else ''}".rstrip())
    lines += ["", "`vstar build SOURCE --help` lists a builder's settings."]
    return "\n".join(lines)


def cmd_build(argv: list[str]) -> None:
    from vstar.configs import set_program
    from vstar.sources import SOURCES

    if not argv or argv[0].startswith("-"):
        if _wants_help(argv):
            print(_build_usage(SOURCES))
            return
        raise ConfigError(f"a source name comes first: vstar build SOURCE ... ({', '.join(SOURCES.names())})")
    name, rest = argv[0], argv[1:]
    builder = SOURCES.get(name)
    set_program(f"vstar build {name}")
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


def cmd_assemble(argv: list[str]) -> None:
    from vstar.stages import assemble_main

    assemble_main(argv)


def check_training_inputs(config, *, needs_dataset: bool) -> None:
    """The model (and, for `vstar train`, the dataset) of a training config exist, before anything loads."""
    from vstar.configs import check_reference

    check_reference(config.model_name_or_path, "model_name_or_path", "model")
    if needs_dataset:
        check_reference(config.dataset, "dataset", "instruction dataset")
    if config.init_adapter:
        check_reference(config.init_adapter, "init_adapter", "adapter")


def cmd_train(argv: list[str]) -> None:
    from vstar.configs import parse_configs
    from vstar.train.sft import VStarSFTConfig

    (config,) = parse_configs((VStarSFTConfig,), argv)
    check_training_inputs(config, needs_dataset=True)
    from vstar.train.sft import train

    train(config)


def cmd_cycle(argv: list[str]) -> None:
    from vstar.configs import CycleConfig, check_reference, parse_configs
    from vstar.train.sft import VStarSFTConfig

    cycle_config, train_config = parse_configs((CycleConfig, VStarSFTConfig), _hub_flags(argv))
    if not cycle_config.resume_from_hub:
        check_reference(cycle_config.source_dataset, "source_dataset", "source dataset")
        check_training_inputs(train_config, needs_dataset=False)
    if cycle_config.control_dataset:
        check_reference(cycle_config.control_dataset, "control_dataset", "control dataset")
    from vstar.cycle import CycleRunner
    from vstar.demo import print_table
    from vstar.distributed import is_main_process

    history = CycleRunner(cycle_config, train_config).run()
    if is_main_process():
        print_table(history)


def cmd_push(argv: list[str]) -> None:
    from vstar.configs import set_program
    from vstar.push import PushConfig, main

    if not argv or argv[0].startswith("-"):
        if _wants_help(argv):
            from vstar.configs import parse_configs

            set_program("vstar push RUN_DIR")
            parse_configs((PushConfig,), ["--help"])
            return
        raise ConfigError("a run directory comes first: vstar push RUN_DIR --dataset_repo ORG/NAME ...")
    main(_hub_flags(argv))


def cmd_eval(argv: list[str]) -> None:
    from vstar.evaluate.cli import main

    main(argv)


def cmd_demo(argv: list[str]) -> None:
    from vstar.demo import main

    main(_hub_flags(argv))


def _module_command(module: str) -> Callable[[list[str]], None]:
    """A command whose `main(argv)` lives in `module`, imported only when the command runs."""

    def run(argv: list[str]) -> None:
        import importlib

        importlib.import_module(module).main(argv)

    run.__name__ = f"cmd_{module.rsplit('.', 1)[-1]}"
    return run


COMMANDS: dict[str, Callable[[list[str]], None]] = {
    "build": cmd_build,
    "generate": cmd_generate,
    "verify": cmd_verify,
    "assemble": cmd_assemble,
    "train": cmd_train,
    "cycle": cmd_cycle,
    "eval": cmd_eval,
    "demo": cmd_demo,
    "push": cmd_push,
    "split": _module_command("vstar.curate.split"),
    "caption": _module_command("vstar.synthesize.captions"),
    "select": _module_command("vstar.curate.select"),
    "qa": _module_command("vstar.synthesize.qa"),
    "export": _module_command("vstar.export"),
    "train-scorer": _module_command("vstar.train.scorer"),
    "flywheel": _module_command("vstar.flywheel"),
    "grpo": _module_command("vstar.train.grpo"),
    "view": _module_command("vstar.view.app"),
}


# --- help cache: `vstar CMD --help` needs trl and transformers imported (~10 s), so the text is kept per version


def _help_cache_path(argv: list[str]) -> Path | None:
    """Where the help text of a plain `vstar CMD [SOURCE] --help` is kept, keyed on everything it depends on."""
    import shutil
    from importlib import metadata

    command = [a for a in argv if a not in ("-h", "--help")]
    if len(command) > (2 if command[:1] == ["build"] else 1) or any(a.startswith("-") for a in command):
        return None  # `--config` or flags change the defaults shown
    package = Path(__file__).resolve().parent
    state = [(str(p.relative_to(package)), p.stat().st_size, p.stat().st_mtime_ns) for p in package.rglob("*.py")]
    versions = {}
    for name in ("trl", "transformers", "peft", "datasets", "huggingface_hub"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    key = json.dumps(
        [command, __version__, versions, sorted(state), shutil.get_terminal_size().columns, sys.version], default=str
    )
    root = (
        os.environ.get("VSTAR_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vstar"
    )
    return Path(root) / "help" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.txt"


def _print_help(command: str, rest: list[str]) -> None:
    """Print a command's help from the cache, or produce it (and keep it)."""
    cache = _help_cache_path([command, *rest])
    if cache is not None and cache.is_file():
        sys.stdout.write(cache.read_text())
        return
    from vstar.configs import set_program

    set_program(f"vstar {command}")
    buffer = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(buffer):
        try:
            COMMANDS[command](rest)
        except SystemExit as stop:
            code = stop.code or 0
    text = buffer.getvalue()
    sys.stdout.write(text)
    if code:
        raise SystemExit(code)
    if cache is not None and text:
        with contextlib.suppress(OSError):  # a read-only home only loses the speed-up
            cache.parent.mkdir(parents=True, exist_ok=True)
            partial = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
            partial.write_text(text)
            partial.replace(cache)


def _report(command: str, exc: BaseException, debug: bool) -> int:
    """Print the one-line message of an expected failure (and the traceback with `--debug`); returns the exit status.

    An unexpected exception is a bug, not a bad input: its traceback is printed, to be reported.
    """
    import traceback

    message = user_message(exc)
    prefix = f"vstar {command}: error:" if command else "vstar: error:"
    if debug or message is None:
        traceback.print_exception(exc, file=sys.stderr)
    if message is not None:
        print(f"{prefix} {message}", file=sys.stderr)
        return EXIT_USAGE
    print(
        f"{prefix} unexpected {type(exc).__name__} (a bug: please report it with the traceback above)", file=sys.stderr
    )
    return EXIT_INTERNAL


def main(argv: list[str] | None = None) -> None:
    """Run `vstar COMMAND ARGS...`; exits with status 2 and one line on stderr for a bad input."""
    argv, debug_flag = _pop_debug(list(sys.argv[1:] if argv is None else argv))
    debug = debug_flag or debug_enabled()
    if argv[:1] in (["--version"], ["-V"]):
        print(f"vstar {__version__}")
        return
    if not argv or argv[0] in ("-h", "--help"):
        from vstar.sources import SOURCES

        print(USAGE.format(sources=", ".join(SOURCES.names())))
        return
    command = argv[0]
    if command not in COMMANDS:
        print(
            f"vstar: error: unknown command {command!r}{did_you_mean(command, COMMANDS)}; commands: "
            f"{', '.join(COMMANDS)} (`vstar --help` describes them)",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_USAGE)
    rest = _normalise_flags(argv[1:])
    try:
        if _wants_help(rest):
            _print_help(command, rest)
            return
        from vstar.configs import set_program

        set_program(f"vstar {command}")
        _setup_logging(debug)
        COMMANDS[command](rest)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print(f"vstar {command}: interrupted; run the same command again to resume", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as exc:
        raise SystemExit(_report(command, exc, debug)) from None
    finally:
        if "vstar.configs" in sys.modules:  # a later in-process `parse_configs` call is not this command
            sys.modules["vstar.configs"].set_program("vstar")


if __name__ == "__main__":
    main()
