"""``rnnkit serve RUN [RUN ...]``: an HTTP JSON server for trained runs (needs ``pip install rnnkit[serve]``)."""

from __future__ import annotations

import argparse
import signal
import sys

from rnnkit.errors import ConfigError


def register(tasks: argparse._SubParsersAction) -> None:
    from rnnkit.serve.settings import Settings

    d = Settings()
    p = tasks.add_parser("serve", help="serve trained runs over HTTP", description="Serve RUNs (any task) as JSON "
                         "endpoints on FastAPI + uvicorn, with dynamic batching; docs at http://HOST:PORT/docs. "
                         "SIGTERM shuts down cleanly (status 0).")
    p.add_argument("runs", metavar="RUN", nargs="+", help="run folders; requests name them by folder name")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="requests per batch; 1 runs them one at "
                   "a time (default: %(default)s)")
    p.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms, help="how long a batch waits for more "
                   "requests (default: %(default)s)")
    p.add_argument("--max-queue", type=int, default=d.max_queue, help="waiting requests per run and endpoint; "
                   "more are answered 503 (default: %(default)s)")
    p.add_argument("--max-body", type=int, default=d.max_body, help="request body bytes; more: 413 "
                   "(default: %(default)s)")
    p.add_argument("--max-input", type=int, default=d.max_input, help="input characters per request; more: 422 "
                   "(default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=d.max_tokens, help="tokens one generation may ask for "
                   "(default: %(default)s)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from rnnkit.serve.app import create_app, load_served
    except ImportError as e:
        raise ConfigError(f"rnnkit serve needs the serve extra (pip install rnnkit[serve]): {e}") from None
    from rnnkit.serve.settings import Settings

    for name in ("max_batch", "max_queue", "max_body", "max_input"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(args, name)}")
    if args.max_wait_ms < 0 or args.max_tokens < 0:
        raise ConfigError("--max-wait-ms and --max-tokens: must be >= 0")
    settings = Settings(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                        max_body=args.max_body, max_input=args.max_input, max_tokens=args.max_tokens)
    app = create_app(load_served(args.runs), settings)
    stopped: list[int] = []
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again under the handler it found: with
    # this one the process ends normally (status 0) instead of being killed by the re-raised signal
    previous = signal.signal(signal.SIGTERM, lambda sig, frame: stopped.append(sig))
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        signal.signal(signal.SIGTERM, previous)
    if stopped:
        print("rnnkit: serve: stopped (SIGTERM)", file=sys.stderr)
    return 0
