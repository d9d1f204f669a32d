"""``python -m rnnkit`` and the ``rnnkit`` console command: :func:`rnnkit.cli.main.main`, with Ctrl-C during
the start-up imports reported like Ctrl-C anywhere else (one line, status 130, no traceback)."""

import sys


def run() -> int:
    try:
        from rnnkit.cli.main import main
    except KeyboardInterrupt:
        print("rnnkit: interrupted", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    raise SystemExit(run())
