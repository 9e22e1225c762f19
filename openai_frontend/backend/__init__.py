"""How the shim reaches the models: a protocol and its tritonclient (gRPC asyncio) implementation."""

from openai_frontend.backend.base import Backend, Delta, LlmRequest

__all__ = ["Backend", "Delta", "LlmRequest"]
