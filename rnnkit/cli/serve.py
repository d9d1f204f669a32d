"""``rnnkit serve RUN [RUN ...]``: an HTTP JSON server for trained runs (needs ``pip install rnnkit[serve]``)."""

from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import fields

from rnnkit.errors import ConfigError
from rnnkit.serve.settings import HELP, Settings


def register(tasks: argparse._SubParsersAction) -> None:
    p = tasks.add_parser("serve", help="serve trained runs over HTTP", description="Serve RUNs (any task) as JSON "
                         "endpoints on FastAPI + uvicorn, with dynamic batching; docs at http://HOST:PORT/docs. "
                         "SIGTERM shuts down cleanly (status 0).")
    p.add_argument("runs", metavar="RUN", nargs="+", help="run folders; requests name them by folder name")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    for f in fields(Settings):
        p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default,
                       help=f"{HELP[f.name]} (default: %(default)s)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from rnnkit.serve.app import create_app, load_served
    except ImportError as e:
        raise ConfigError(f"rnnkit serve needs the serve extra (pip install rnnkit[serve]): {e}") from None
    try:
        settings = Settings(**{f.name: getattr(args, f.name) for f in fields(Settings)})
    except ValueError as e:
        raise ConfigError(str(e)) from None
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
