"""The one retry policy of the shim: bounded attempts, exponential backoff with jitter, a cap per wait.

Used for transient failures only, where sending the same request again is safe: a media download the
server answered 5xx/408/429 (or whose connection failed before any byte of the body), and a generation
tritonserver refused as unavailable before the llm model answered anything (no token was streamed).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: Download statuses worth another try: the server or something in front of it was busy or failing.
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` more attempts after the first; the wait before retry ``k`` (0-based) is drawn from
    ``[backoff_s * 2**k / 2, backoff_s * 2**k]`` ("equal jitter", so clients that failed together do not
    come back together), at least a server's Retry-After, and never more than ``max_wait_s``."""

    retries: int = 2
    backoff_s: float = 0.5
    max_wait_s: float = 5.0

    def wait_s(self, retry: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first)."""
        ceiling = self.backoff_s * 2**retry
        wait = random.uniform(ceiling / 2, ceiling)
        if retry_after_s is not None:
            wait = max(wait, retry_after_s)
        return min(wait, self.max_wait_s)


def retry_after_s(value: str | None) -> float | None:
    """A Retry-After header given in seconds (an HTTP date is not honoured: the backoff applies)."""
    if value and value.strip().isdigit():
        return float(value.strip())
    return None
