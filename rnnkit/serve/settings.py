"""Server limits and batching settings (no web-framework import: the CLI reads the defaults)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    """Server limits and batching (``rnnkit serve`` flags of the same names)."""

    max_batch: int = 32  # requests per batch (1: one at a time)
    max_wait_ms: float = 5.0  # how long a batch waits for more requests
    max_queue: int = 256  # waiting requests (and open token streams) per run and endpoint; more get 503
    max_body: int = 1 << 20  # request body bytes
    max_input: int = 10_000  # characters of input per request
    max_tokens: int = 1_000  # tokens one generation may ask for
    max_beam: int = 16  # widest beam a translation may ask for
