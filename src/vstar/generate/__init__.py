"""Generation backends behind one interface; importing this package registers the built-in ones."""

# Register the backends; vLLM and httpx are imported only when used.
from vstar.generate import endpoint, hf, vllm  # noqa: F401
from vstar.generate.base import (
    BACKENDS,
    GenerationBackend,
    GenerationRequest,
    GenerationSettings,
    RequestFailed,
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
    "RequestFailed",
    "get_backend",
    "read_generations",
    "read_skipped",
    "run_generation",
]
