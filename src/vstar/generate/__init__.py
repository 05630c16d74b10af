"""Generation backends behind one interface; importing this package registers the built-in ones."""

from vstar.generate import hf, vllm  # noqa: F401  (register the backends; vLLM itself is imported only when used)
from vstar.generate.base import (
    BACKENDS,
    GenerationBackend,
    GenerationRequest,
    GenerationSettings,
    get_backend,
    read_generations,
    read_skipped,
    run_generation,
)

__all__ = [
    "BACKENDS",
    "GenerationBackend",
    "GenerationRequest",
    "GenerationSettings",
    "get_backend",
    "read_generations",
    "read_skipped",
    "run_generation",
]
