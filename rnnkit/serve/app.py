"""``rnnkit serve``: an HTTP JSON server (FastAPI on uvicorn) for trained runs, with dynamic batching.

Endpoints, by the task of the loaded runs (a request names its run with ``"model"``, the run folder's name;
without it, the first loaded run of the task answers):

    POST /v1/generate    LM: continue a prompt; ``"stream": true`` sends tokens as server-sent events
    POST /v1/score       LM: total log-likelihood of texts
    POST /v1/tag         tagger: tags of tokenised sentences
    POST /v1/translate   seq2seq: translate sentences (greedy or beam search)
    POST /v1/classify    classifier: label of each text (multi-label: labels), or its ``top_k`` labels with
                         their probabilities
    GET  /health         liveness and batching counters
    GET  /v1/models      the loaded runs and their endpoints
    GET  /docs           OpenAPI documentation (schema at /openapi.json)

Every POST runs through a :class:`~rnnkit.serve.batching.Batcher` per run and endpoint: requests within
``max_wait_ms`` are answered by one call of the endpoint's batch function (score, tag and translate run a
whole batch in one model call, classify one per distinct ``top_k``; generate runs its requests one after the
other). Token streams (``/v1/generate`` with ``"stream": true``) do not go through the batcher: each stream's
steps run on the same model thread, interleaved with the batches, and at most ``max_queue`` streams per run are
open; each event carries the text its token adds (exact for char and word runs; BPE decoding may reshape earlier text).

Limits: a body over ``max_body`` bytes is refused with 413 (a POST without Content-Length with 411), an
input over ``max_input`` characters or a field out of range with 422, bad JSON with 422; a full queue
answers 503 with ``Retry-After``.

Adding a task's endpoint is one :class:`Endpoint` in :data:`ENDPOINTS`: a path, the
task name, a pydantic request model, a batch function ``(run, requests) -> responses`` and the input
size of a request.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, field_validator

from rnnkit import __version__
from rnnkit.decode import stream
from rnnkit.errors import ConfigError, RnnkitError
from rnnkit.serve.batching import Batcher, QueueFull
from rnnkit.serve.settings import Settings

# --- requests ------------------------------------------------------------------------------------------------

class GenerateRequest(BaseModel):
    prompt: str = Field("", description="text to continue (empty: start a new line)")
    length: int = Field(100, ge=0, description="tokens to generate")
    temperature: float = Field(1.0, ge=0.0, description="0: greedy")
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, description="sampling seed; the same seed gives the same text")
    stream: bool = Field(False, description="send the tokens as server-sent events")
    model: str | None = None


class ScoreRequest(BaseModel):
    texts: list[str] = Field(..., min_length=1, description="each text is scored as one stream")
    model: str | None = None


class TagRequest(BaseModel):
    sentences: list[list[str]] = Field(..., min_length=1, description="tokenised sentences")
    model: str | None = None


class TranslateRequest(BaseModel):
    sentences: list[str] = Field(..., min_length=1)
    beam: int = Field(1, ge=1, description="beam width (1: greedy)")
    model: str | None = None


class ClassifyRequest(BaseModel):
    texts: list[str] = Field(..., min_length=1, description="texts to classify (each with at least one token)")
    top_k: int | None = Field(None, ge=1, description="the k most probable labels of each text, with their "
                              "probabilities (at most the number of classes)")
    model: str | None = None

    @field_validator("texts")
    @classmethod
    def no_empty_text(cls, texts: list[str]) -> list[str]:
        empty = next((i for i, t in enumerate(texts) if not t.strip()), None)
        if empty is not None:
            raise ValueError(f"text {empty} is empty")
        return texts


# --- batch functions: (run, requests) -> one response per request -----------------------------------------------
# score, tag and translate run all requests of a batch in one model call (classify: one per distinct top_k);
# generate runs them one after the other inside the batch (each request has its own sampling settings and seed)

def generate_batch(run: Any, reqs: Sequence[GenerateRequest]) -> list[dict]:
    return [{"text": run.generate(r.prompt, r.length, temperature=r.temperature, top_k=r.top_k, top_p=r.top_p,
                                  seed=r.seed)[0]} for r in reqs]


def score_batch(run: Any, reqs: Sequence[ScoreRequest]) -> list[dict]:
    ids = [run.tokenizer.encode_stream(t) for r in reqs for t in r.texts]
    found = iter(zip(stream.score_many(run.model, ids), ids))  # one call: all requests' texts as one batch
    out = []
    for r in reqs:
        scored = [next(found) for _ in r.texts]
        out.append({"log_likelihoods": [total for total, _ in scored], "tokens": [len(i) for _, i in scored]})
    return out


def tag_batch(run: Any, reqs: Sequence[TagRequest]) -> list[dict]:
    sentences = [s for r in reqs for s in r.sentences]
    tags = iter(run.predict(sentences))  # one call: the model batches all sentences of all requests
    return [{"tags": [next(tags) for _ in r.sentences]} for r in reqs]


def translate_batch(run: Any, reqs: Sequence[TranslateRequest]) -> list[dict]:
    out: list[dict | None] = [None] * len(reqs)
    for beam in sorted({r.beam for r in reqs}):  # one call per beam width
        which = [i for i, r in enumerate(reqs) if r.beam == beam]
        found = iter(run.translate([s for i in which for s in reqs[i].sentences], beam=beam))
        for i in which:
            out[i] = {"translations": [next(found) for _ in reqs[i].sentences]}
    return out


def classify_batch(run: Any, reqs: Sequence[ClassifyRequest]) -> list[dict]:
    out: list[dict | None] = [None] * len(reqs)
    for k in sorted({r.top_k for r in reqs}, key=lambda k: k or 0):  # one call per top_k
        which = [i for i, r in enumerate(reqs) if r.top_k == k]
        found = iter(run.predict([t for i in which for t in reqs[i].texts], top_k=k))
        for i in which:
            out[i] = {"predictions": [next(found) for _ in reqs[i].texts]}
    return out


@dataclass(frozen=True)
class Endpoint:
    """One POST endpoint of a task."""

    path: str
    task: str
    request: type[BaseModel]
    batch: Callable[[Any, Sequence[Any]], list[dict]]
    size: Callable[[Any], int]  # characters of input, checked against ``max_input``
    summary: str


ENDPOINTS = [
    Endpoint("/v1/generate", "lm", GenerateRequest, generate_batch, lambda r: len(r.prompt),
             "continue a prompt (server-sent events with stream=true)"),
    Endpoint("/v1/score", "lm", ScoreRequest, score_batch, lambda r: sum(map(len, r.texts)),
             "total log-likelihood (nats) of each text"),
    Endpoint("/v1/tag", "tag", TagRequest, tag_batch, lambda r: sum(len(w) for s in r.sentences for w in s),
             "tags of tokenised sentences"),
    Endpoint("/v1/translate", "seq2seq", TranslateRequest, translate_batch, lambda r: sum(map(len, r.sentences)),
             "translate sentences"),
    Endpoint("/v1/classify", "classify", ClassifyRequest, classify_batch, lambda r: sum(map(len, r.texts)),
             "label (multi-label: labels) of each text, or its top_k labels with probabilities"),
]


def check_limits(req: Any, endpoint: Endpoint, settings: Settings) -> None:
    """422 for inputs past the server's limits (the request model checks types and ranges)."""
    size = endpoint.size(req)
    if size > settings.max_input:
        raise HTTPException(422, f"input too long: {size} characters, the limit is {settings.max_input}")
    if isinstance(req, GenerateRequest) and req.length > settings.max_tokens:
        raise HTTPException(422, f"field 'length': at most {settings.max_tokens}, got {req.length}")
    if isinstance(req, TranslateRequest) and req.beam > settings.max_beam:
        raise HTTPException(422, f"field 'beam': at most {settings.max_beam}, got {req.beam}")


# --- the app -------------------------------------------------------------------------------------------------

@dataclass
class Served:
    """A loaded run: its name (the folder's), task and the run object of the task's public API."""

    name: str
    task: str
    run: Any
    path: Path


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


class BodyLimit:
    """ASGI middleware: a POST needs a Content-Length (411) of at most ``max_body`` bytes (413), checked before
    the body is read. Plain ASGI rather than ``@app.middleware("http")``, whose per-request wrapping costs
    more than the rest of a small request's handling."""

    def __init__(self, app: Any, max_body: int) -> None:
        self.app, self.max_body = app, max_body

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            length = dict(scope["headers"]).get(b"content-length")
            if length is None:
                return await _error(411, "a request body needs a Content-Length header")(scope, receive, send)
            if not length.isdigit() or int(length) > self.max_body:
                message = f"request body too large: {length.decode('latin-1')} bytes, the limit is {self.max_body}"
                return await _error(413, message)(scope, receive, send)
        await self.app(scope, receive, send)


def create_app(served: Sequence[Served], settings: Settings | None = None) -> FastAPI:
    """The FastAPI application serving ``served`` runs with ``settings`` (default: :class:`Settings`)."""
    settings = settings or Settings()
    names = [s.name for s in served]
    if len(set(names)) != len(names):
        raise ConfigError(f"runs: two runs share a folder name ({', '.join(names)}); requests name runs by it")
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rnnkit-model")  # one model call at a time
    batchers: dict[tuple[str, str], Batcher] = {}
    streams_open: dict[str, int] = {s.name: 0 for s in served}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for s in served:
            for ep in ENDPOINTS:
                if ep.task == s.task:
                    b = Batcher(partial(ep.batch, s.run), executor, max_batch=settings.max_batch,
                                max_wait_ms=settings.max_wait_ms, max_queue=settings.max_queue)
                    b.start()
                    batchers[(s.name, ep.path)] = b
        yield
        for b in batchers.values():
            await b.stop()
        executor.shutdown(wait=True, cancel_futures=True)

    app = FastAPI(title="rnnkit serve", version=__version__, lifespan=lifespan,
                  description="Trained rnnkit runs over HTTP: " + ", ".join(f"{s.name} ({s.task})" for s in served))

    app.add_middleware(BodyLimit, max_body=settings.max_body)

    def pick(task: str, model: str | None) -> Served:
        for s in served:
            if s.task == task and model in (None, s.name):
                return s
        loaded = ", ".join(s.name for s in served if s.task == task)
        raise HTTPException(404, f"field 'model': no {task} run named {model!r}; loaded: {loaded}")

    def add(ep: Endpoint) -> None:
        async def handle(req: BaseModel) -> Any:
            check_limits(req, ep, settings)
            s = pick(ep.task, req.model)
            if getattr(req, "stream", False):
                return token_stream(s, req)
            try:
                return await batchers[(s.name, ep.path)].submit(req)
            except QueueFull:
                return _error(503, "server busy: the request queue is full; retry later", {"Retry-After": "1"})
            except (RnnkitError, ValueError, TypeError) as e:
                return _error(422, str(e))

        handle.__annotations__["req"] = ep.request  # FastAPI reads the body model from the annotation
        app.post(ep.path, summary=ep.summary, name=ep.path)(handle)

    def token_stream(s: Served, req: GenerateRequest) -> Any:
        """Server-sent events: ``data: {"id", "text"}`` per token (the text it adds), then ``data: [DONE]``."""
        if streams_open[s.name] >= settings.max_queue:
            return _error(503, "server busy: too many open streams; retry later", {"Retry-After": "1"})
        streams_open[s.name] += 1
        loop = asyncio.get_running_loop()
        run, model = s.run, s.run.model
        generator = torch.Generator()
        if req.seed is None:
            generator.seed()
        else:
            generator.manual_seed(req.seed)

        async def events() -> AsyncIterator[str]:
            try:
                prompt = stream.prompt_ids(run.tokenizer, req.prompt)
                _, state = await loop.run_in_executor(executor, stream.score_ids, model, prompt)
                ids: list[int] = []
                text = ""
                for _ in range(req.length):
                    new, state = await loop.run_in_executor(executor, partial(
                        stream.sample, model, state, 1, temperature=req.temperature, top_k=req.top_k,
                        top_p=req.top_p, generator=generator))
                    ids.append(new[0][0])
                    full = run.tokenizer.decode_stream(ids)
                    yield f"data: {json.dumps({'id': ids[-1], 'text': full[len(text):]})}\n\n"
                    text = full
                yield "data: [DONE]\n\n"
            finally:
                streams_open[s.name] -= 1

        return StreamingResponse(events(), media_type="text/event-stream")

    for ep in ENDPOINTS:
        if any(s.task == ep.task for s in served):
            add(ep)

    @app.get("/health", summary="liveness and batching counters")
    async def health() -> dict:
        return {"status": "ok", "batching": {f"{name} {path}": vars(b.stats) for (name, path), b in batchers.items()}}

    @app.get("/v1/models", summary="the loaded runs")
    async def models() -> dict:
        return {"models": [{"name": s.name, "task": s.task, "path": str(s.path),
                            "endpoints": [ep.path for ep in ENDPOINTS if ep.task == s.task]} for s in served]}

    return app


def load_served(run_dirs: Sequence[str | Path]) -> list[Served]:
    """Load run folders of any task (on the CPU) through the tasks' public ``load``."""
    from rnnkit.export.onnx import load_run

    out = []
    for d in run_dirs:
        task, run = load_run(d)
        out.append(Served(Path(d).resolve().name, task, run, Path(d)))
    return out
