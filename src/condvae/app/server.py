"""The FastAPI application: the page, its assets and the JSON API (``create_app``), and
``serve``, which runs it under uvicorn.

Every handler is async and never fits on the event loop: checking a request runs in the
threadpool, fitting in the ``JobQueue``'s workers, so a long ``gvi`` fit never delays an
``ipa`` answer. Errors are one JSON line, ``{"detail": "argument: what was expected"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from condvae import __version__
from condvae.app import service
from condvae.app.bank import ModelBank
from condvae.app.config import ServeConfig
from condvae.app.imaging import png
from condvae.app.jobs import Job, JobQueue, QueueFull
from condvae.app.schemas import ConditionRequest, DesignRequest, ImageUpload, JobRequest
from condvae.errors import CondVAEError

STATIC = Path(__file__).parent / "static"
SMALL_BODY = 64 * 1024  # bytes: requests up to this size are checked on the event loop


class BodyLimit:
    """ASGI middleware: refuse a body over ``limit`` bytes with 413, by its Content-Length before
    reading anything, and by counting as it arrives otherwise."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            response = _too_large(self.limit)
            return await response(scope, receive, send)
        seen, over = 0, False

        async def counted() -> Any:
            nonlocal seen, over
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:  # stop reading; the answer is replaced below
                over = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def answer(message: dict[str, Any]) -> None:
            if not over:
                return await send(message)
            if message["type"] == "http.response.start":
                response = _too_large(self.limit)
                await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
                await send({"type": "http.response.body", "body": response.body})

        await self.app(scope, counted, answer)


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse({"detail": f"body: larger than the {limit} bytes this server takes"}, status_code=413)


def _error(status: int, detail: str, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers or None)


def _validation_message(err: RequestValidationError) -> tuple[int, str]:
    first = err.errors()[0] if err.errors() else {}
    if first.get("type") == "json_invalid":
        return 400, f"body: malformed JSON ({first.get('ctx', {}).get('error', 'could not be parsed')})"
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    return 422, f"{where}: {first.get('msg', 'invalid')}"


def create_app(config: ServeConfig | None = None, bank: ModelBank | None = None) -> FastAPI:
    """The app for ``config`` (default: every bundled model, default limits)."""
    cfg = config or ServeConfig()
    bank = bank or ModelBank(cfg)
    lanes = {"fast": cfg.fast_workers, "fit": cfg.workers}
    windows = {"fit": cfg.batch_window}
    queue = JobQueue(lanes, cfg.queue, cfg.time_limit, cfg.keep_jobs, cfg.max_batch, windows)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if cfg.preload:
            await run_in_threadpool(lambda: [bank.vae(n) for n in bank.names])
        yield
        queue.shutdown()

    app = FastAPI(
        title="condvae",
        version=__version__,
        description="Condition pretrained VAEs on what you see: completions, uncertainty, where to look.",
        lifespan=lifespan,
    )
    app.state.config, app.state.bank, app.state.queue = cfg, bank, queue
    app.add_middleware(BodyLimit, limit=cfg.max_body_bytes)

    @app.exception_handler(CondVAEError)
    async def bad_request(request: Request, err: CondVAEError) -> JSONResponse:
        return _error(400, str(err))

    @app.exception_handler(LookupError)
    async def not_found(request: Request, err: LookupError) -> JSONResponse:
        return _error(404, str(err.args[0]) if err.args else "not found")

    @app.exception_handler(QueueFull)
    async def full(request: Request, err: QueueFull) -> JSONResponse:
        return _error(503, str(err), **{"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        return _error(*_validation_message(err))

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/health")
    async def health() -> dict[str, Any]:
        """The server is up; its job slots in use."""
        return {"status": "ok", "version": __version__, "jobs": queue.stats()}

    @app.get("/api/models")
    async def models() -> list[dict[str, Any]]:
        """The models a client may name, with what the page needs to draw their controls."""
        return await run_in_threadpool(lambda: [_model(n) for n in bank.names])

    def _model(name: str) -> dict[str, Any]:
        return bank.info(name) | {"methods": service.methods_for(bank, name)}

    @app.get("/api/models/{name}")
    async def model(name: str) -> dict[str, Any]:
        return await run_in_threadpool(_model, bank.check(name))

    @app.get("/api/models/{name}/examples")
    async def examples(name: str) -> dict[str, Any]:
        """Test items of the model's dataset (or, where it is absent, draws of the model)."""
        found = await run_in_threadpool(bank.examples, bank.check(name))
        items = found["items"]
        if bank.is_table(name):
            rows = [[None if v != v else float(v) for v in row] for row in items.tolist()]
            return {"source": found["source"], "rows": rows}
        return {"source": found["source"], "images": [png(x) for x in items], "x": items.tolist()}

    @app.post("/api/models/{name}/image")
    async def image(name: str, body: ImageUpload) -> dict[str, Any]:
        """An uploaded PNG/JPEG checked and fitted to the model (cropped, resized, binarised)."""
        return await run_in_threadpool(service.upload, bank, cfg, name, body.image)

    @app.get("/api/methods")
    async def methods() -> dict[str, Any]:
        """Every conditioning method with the options a client may set and their defaults."""
        return service.method_table()

    async def _submit(
        kind: str, body: dict[str, Any] | ConditionRequest | DesignRequest, small: bool = False
    ) -> Job:
        """Check a request and queue its job. A small body (nested lists of a small image, no
        PNG to decode) is checked on the event loop: a fraction of a millisecond, less than the
        hop to a thread; anything larger is checked in the threadpool."""

        async def checked(prepare: Callable[..., Any], req: Any) -> Any:
            if small:
                return prepare(bank, cfg, req)
            return await run_in_threadpool(prepare, bank, cfg, req)

        if kind == "condition":
            req = body if isinstance(body, ConditionRequest) else ConditionRequest.model_validate(body)
            work = await checked(service.prepare_condition, req)
            key, lane = service.condition_key(work), service.lane(work.method)
            return queue.submit(kind, service.run_conditions, work, key, lane)
        req2 = body if isinstance(body, DesignRequest) else DesignRequest.model_validate(body)
        design_work = await checked(service.prepare_design, req2)
        run = functools.partial(service.run_designs, bank)
        # no batch key: the EIG estimators draw completions for a whole batch at once, so an
        # item's scores would depend on its batch mates; design jobs run one by one
        return queue.submit(kind, run, design_work, None, service.lane(design_work.method))

    def _small(request: Request, body: ConditionRequest | DesignRequest) -> bool:
        length = request.headers.get("content-length", "")
        return (
            length.isdigit()
            and int(length) <= SMALL_BODY
            and body.image is None
            and not isinstance(body.mask, str)
        )

    async def _answer(job: Job) -> JSONResponse:
        await asyncio.wrap_future(job.future)
        if job.state == "done":  # already JSON types: skip FastAPI's recursive jsonable_encoder
            return JSONResponse(job.result)
        return _error(job.status, job.error or job.state)

    def body_of(model: type[Any]) -> dict[str, Any]:
        """The OpenAPI entry of a body parsed by ``parse`` (FastAPI sees only a Request)."""
        schema = {"content": {"application/json": {"schema": model.model_json_schema()}}, "required": True}
        return {"requestBody": schema}

    async def parse(request: Request, model: type[Any]) -> Any:
        """The body parsed and validated in one pass by pydantic's JSON reader (in Rust): for a
        784-pixel image and its mask, a fifth of the server's time went to Python's json."""
        try:
            return model.model_validate_json(await request.body())
        except ValidationError as err:
            raise RequestValidationError(err.errors()) from None

    @app.post("/api/condition", openapi_extra=body_of(ConditionRequest))
    async def condition(request: Request) -> Any:
        """Condition and wait: completions, per-pixel mean and standard deviation (a table's
        per-feature mean, deviation and 90% interval), C-ELBO and the fit's diagnostics."""
        body = await parse(request, ConditionRequest)
        return await _answer(await _submit("condition", body, _small(request, body)))

    @app.post("/api/design", openapi_extra=body_of(DesignRequest))
    async def design(request: Request) -> Any:
        """Where to look next: every candidate glimpse (or feature) by its expected information
        gain given the evidence, and for images a heat map."""
        body = await parse(request, DesignRequest)
        return await _answer(await _submit("design", body, _small(request, body)))

    @app.post("/api/jobs", status_code=202)
    async def submit(body: JobRequest) -> dict[str, Any]:
        """Start a condition or design job; follow it at /api/jobs/{id} or /api/jobs/{id}/events."""
        try:
            return (await _submit(body.kind, body.request)).summary()
        except ValidationError as err:  # of the inner request
            first = err.errors()[0] if err.errors() else {}
            where = ".".join(str(p) for p in first.get("loc", ())) or "request"
            return _error(422, f"request.{where}: {first.get('msg', err)}")

    @app.get("/api/jobs/{job_id}")
    async def status(job_id: str) -> dict[str, Any]:
        """A job's state and progress; its result once done."""
        job = _job(job_id)
        out = job.summary()
        if job.state == "done":
            out["result"] = job.result
        return out

    def _job(job_id: str) -> Job:
        try:
            return queue.get(job_id)
        except KeyError:
            raise LookupError(f"job: unknown {job_id!r} (finished jobs are kept for a while only)") from None

    @app.delete("/api/jobs/{job_id}")
    async def cancel(job_id: str) -> dict[str, Any]:
        """Stop a queued or running job (a running fit stops within one of its steps)."""
        _job(job_id)
        return queue.cancel(job_id).summary()

    @app.get("/api/jobs/{job_id}/events")
    async def events(job_id: str) -> StreamingResponse:
        """Server-sent events: the job's summary at every change, until it finishes."""
        job = _job(job_id)

        async def stream() -> AsyncIterator[str]:
            last = -1
            while True:
                if job.version != last:
                    last = job.version
                    yield f"data: {json.dumps(job.summary())}\n\n"
                if job.finished_state and job.version == last:
                    return
                await asyncio.sleep(0.1)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(config: ServeConfig | None = None, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the app under uvicorn until interrupted."""
    import uvicorn

    app = create_app(config)
    where = f"http://{host}:{port}"
    print(f"condvae serve: the page at {where}/ , the API's documentation at {where}/docs")
    if not is_loopback(host):
        print(
            f"condvae serve: listening on {host}, not only on this machine: anyone who can reach it "
            "can use this server (there is no login); use --host 127.0.0.1 to keep it local"
        )
    uvicorn.run(app, host=host, port=port, log_level="warning")
