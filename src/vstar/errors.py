"""vstar's own errors, and the one-line message the command line prints for an expected failure.

A bad recipe, flag, file or folder is the user's to fix, so `vstar` prints one line naming the input and the fix and
exits with status 2; `--debug` (or `VSTAR_DEBUG=1`) shows the traceback as well.

```python
from vstar.errors import InputError

raise InputError("annotations.csv, row 12: start 9.5 is after end 3.0; fix the row or drop it")
```
"""

from __future__ import annotations

import difflib
import os
import pickle
import re
from collections.abc import Iterable
from pathlib import Path

EXIT_USAGE = 2  # bad input, settings or command line: the user can fix it
EXIT_INTERNAL = 1  # anything else: a bug or an environment failure


class VStarError(Exception):
    """A failure whose message alone tells the user what went wrong and what to do."""


class ConfigError(VStarError, ValueError):
    """A setting (recipe key or command-line flag) that is unknown or out of range."""


class InputError(VStarError, ValueError):
    """An input file, folder, table row or Hub id that cannot be used as it is."""


class UnknownNameError(VStarError, KeyError):
    """A name looked up in a registry (command, source, task, backend) that nothing registered."""

    def __str__(self) -> str:
        # KeyError's own str() quotes the message; this one is a sentence.
        return str(self.args[0]) if self.args else ""


def close_names(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """The known names nearest to a misspelt one (for "did you mean" hints).

    Args:
        name: the name given.
        known: the valid names.
        n: at most this many suggestions.
    """
    return difflib.get_close_matches(name, list(known), n=n, cutoff=0.6)


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """` (did you mean a, b?)` or an empty string."""
    close = close_names(name, known)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def debug_enabled(argv: list[str] | None = None) -> bool:
    """Whether tracebacks are wanted: `--debug` on the command line or `VSTAR_DEBUG` set to a true value."""
    if argv is not None and "--debug" in argv:
        return True
    return os.environ.get("VSTAR_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _filename(exc: BaseException) -> str | None:
    name = getattr(exc, "filename", None)
    return os.fsdecode(name) if name else None


def _hub_id_in(message: str) -> str | None:
    # huggingface_hub's validators quote the offending id at the end: "...: '/tmp/model'."
    found = re.findall(r"'([^']+)'", message)
    return found[-1] if found else None


def _hub_message(exc: BaseException) -> str | None:
    """Messages for huggingface_hub's errors (imported lazily: the CLI's fast paths do not load it)."""
    try:
        from huggingface_hub.errors import (
            EntryNotFoundError,
            GatedRepoError,
            HFValidationError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return None
    text = _one_line(str(exc))
    if isinstance(exc, HFValidationError):
        ref = _hub_id_in(text)
        if ref and (ref.startswith((".", "/", "~")) or ref.count("/") > 1 or os.sep in ref.strip("/")):
            return (
                f"folder {ref} does not exist (nor is it a Hub id such as ORG/NAME): check the path, or build or "
                "download it first"
            )
        return f"{ref or 'a Hub id'} is neither an existing folder nor a valid Hub id (ORG/NAME): {text}"
    if isinstance(exc, GatedRepoError):
        return f"the Hub repo is gated: request access on its page and log in (`hf auth login`). {text[:300]}"
    if isinstance(exc, RepositoryNotFoundError):
        repo = getattr(exc, "repo_id", None) or _hub_id_in(text) or "the repo"
        return (
            f"{repo} is not a local folder and the Hub has no repo of that name (or it is private: log in with "
            "`hf auth login` or set HF_TOKEN)"
        )
    if isinstance(exc, RevisionNotFoundError):
        return f"that revision does not exist on the Hub: check the branch, tag or commit after `@`. {text[:300]}"
    if isinstance(exc, LocalEntryNotFoundError):
        return (
            "the file is not in the local Hub cache and the Hub cannot be reached: check the network, or pass a "
            f"local folder. {text[:300]}"
        )
    if isinstance(exc, EntryNotFoundError):
        return f"the Hub repo has no such file: {text[:300]}"
    try:
        from huggingface_hub.errors import HfHubHTTPError
    except ImportError:  # pragma: no cover
        return None
    if isinstance(exc, HfHubHTTPError):
        return f"the Hub refused the request ({text[:300]}): check HF_TOKEN's permissions and the repo name"
    return None


def _av_message(exc: BaseException) -> str | None:
    try:
        import av
    except ImportError:  # pragma: no cover - av is a dependency
        return None
    if isinstance(exc, av.FFmpegError):
        name = _filename(exc) or "a video"
        return f"{name} cannot be decoded ({_one_line(getattr(exc, 'strerror', None) or exc)}): re-encode or remove it"
    return None


def user_message(exc: BaseException) -> str | None:
    """The one-line message for an expected failure, or None for an unexpected one (a bug: keep the traceback).

    Args:
        exc: the exception that stopped the command.
    """
    if isinstance(exc, VStarError):
        return _one_line(str(exc))
    if any(klass.__name__ == "VideoDecodeError" for klass in type(exc).__mro__):
        return f"{_one_line(exc)}: re-encode the clip, or drop it from the dataset"
    for specific in (_hub_message, _av_message):
        message = specific(exc)
        if message:
            return message
    if isinstance(exc, UnicodeDecodeError):
        return (
            f"a text input is not UTF-8 ({exc.reason} at byte {exc.start}: {exc.object[exc.start : exc.start + 4]!r})"
            ": save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 IN > OUT`"
        )
    if isinstance(exc, pickle.UnpicklingError | EOFError):
        return f"a pickle file is damaged or not a pickle ({_one_line(exc)}): download it again"
    if isinstance(exc, IsADirectoryError):
        return f"{_filename(exc) or 'the input'} is a folder where a file is expected"
    if isinstance(exc, NotADirectoryError):
        return f"{_filename(exc) or 'the input'} is a file where a folder is expected"
    if isinstance(exc, FileNotFoundError):
        name = _filename(exc)
        return f"{name} does not exist: check the path" if name else _one_line(exc)
    if isinstance(exc, PermissionError):
        name = _filename(exc) or "an input or output"
        return f"permission denied on {name}: choose a location you can read and write"
    if type(exc).__module__.startswith("yaml"):
        return f"a recipe is not valid YAML: {_one_line(exc)}"
    if isinstance(exc, KeyError):
        key = exc.args[0] if exc.args else "?"
        if isinstance(key, str) and " " in key.strip():  # raised with a sentence, not a bare key
            return _one_line(key)
        return f"a required field or column {key!r} is missing from the input: add it or pick the matching task"
    if isinstance(exc, ValueError):
        return _one_line(exc)
    if isinstance(exc, OSError) and getattr(exc, "errno", None) is not None:
        name = _filename(exc)
        return f"{name + ': ' if name else ''}{_one_line(exc.strerror or exc)}"
    if isinstance(exc, OSError):  # transformers' loaders: a model id that resolves to nothing, a folder missing files
        text = _one_line(exc)
        missing = re.match(r"(\S+) is not a local folder and is not a valid model identifier", text)
        if missing:
            return (
                f"{missing.group(1)} is not a local folder and the Hub has no model of that name (or it is private: "
                "log in with `hf auth login` or set HF_TOKEN)"
            )
        return text[:500]
    return None


def describe_path(path: str | os.PathLike) -> str:
    """A path as messages show it: relative to the working directory when it lies under it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
