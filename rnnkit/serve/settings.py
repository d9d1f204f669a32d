"""Server limits and batching settings (no web-framework import: the CLI reads the defaults)."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Settings:
    """Server limits and batching; ``rnnkit serve`` has a flag per field (``--max-wait-ms`` = max_wait_ms)."""

    max_batch: int = 32  # requests per batch (1: one at a time)
    max_wait_ms: float = 5.0  # how long a batch waits for more requests (while smaller than the previous batch)
    max_queue: int = 256  # waiting requests (and open token streams) per run and endpoint; more get 503
    max_body: int = 1 << 20  # request body bytes; more get 413
    max_input: int = 10_000  # characters of input per request; more get 422
    max_tokens: int = 1_000  # tokens one generation may ask for
    max_beam: int = 16  # widest beam a translation may ask for

    def __post_init__(self) -> None:
        for f in fields(self):
            low = 0 if f.name in ("max_wait_ms", "max_tokens") else 1
            if getattr(self, f.name) < low:
                raise ValueError(f"--{f.name.replace('_', '-')}: must be >= {low}, got {getattr(self, f.name)}")


HELP = {
    "max_batch": "requests per batch; 1 runs them one at a time",
    "max_wait_ms": "how long a batch waits for more requests, while it holds fewer than the previous batch "
                   "(a lone client never waits)",
    "max_queue": "waiting requests per run and endpoint; more are answered 503 with Retry-After",
    "max_body": "request body bytes; more are answered 413",
    "max_input": "input characters per request; more are answered 422",
    "max_tokens": "tokens one generation may ask for",
    "max_beam": "widest beam a translation may ask for",
}
