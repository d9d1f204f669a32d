"""Serving trained runs over HTTP: :mod:`rnnkit.serve.app` (FastAPI endpoints) and
:mod:`rnnkit.serve.batching` (dynamic batching). Needs the ``serve`` extra (fastapi, uvicorn)."""
