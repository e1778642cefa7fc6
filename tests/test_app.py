"""The JSON API of ``condvae serve`` (FastAPI's test client): every endpoint, and every kind of
bad request answered by one JSON line with a 4xx or 503, the server healthy afterwards."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient

from condvae.app import ServeConfig, create_app
from condvae.app.server import is_loopback

IMAGE, TABLE = "mnist-mlp-z2", "wine-tab-z4"
TOP = [[1 if r < 14 else 0 for _ in range(28)] for r in range(28)]


def client_for(**limits: Any) -> TestClient:
    return TestClient(create_app(ServeConfig(models=(IMAGE, TABLE), **limits)))


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with client_for(workers=2, queue=4, time_limit=60.0, max_body_bytes=1_000_000) as c:
        yield c


@pytest.fixture(scope="module")
def digit(client: TestClient) -> list:
    return client.get(f"/api/models/{IMAGE}/examples").json()["x"][0]


def encode(array: np.ndarray, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def decode(data_url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))))


def error(response: Any, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and fragment in detail, detail
    assert "\n" not in detail and "Traceback" not in detail


def healthy(client: TestClient) -> None:
    assert client.get("/api/health").json()["status"] == "ok"


# ---- what a client can read -------------------------------------------------------------------
def test_models_examples_and_methods(client: TestClient) -> None:
    models = {m["name"]: m for m in client.get("/api/models").json()}
    assert set(models) == {IMAGE, TABLE}
    assert models[IMAGE]["kind"] == "image" and models[IMAGE]["data_shape"] == [1, 28, 28]
    assert "grid" in models[IMAGE]["methods"] and "ipa" in models[IMAGE]["methods"]
    assert models[TABLE]["kind"] == "table" and "grid" not in models[TABLE]["methods"]
    assert models[TABLE]["columns"][0]["name"] == "alcohol"
    assert client.get(f"/api/models/{IMAGE}").json()["latent_dim"] == 2
    ex = client.get(f"/api/models/{IMAGE}/examples").json()
    assert len(ex["images"]) == len(ex["x"]) == 12 and decode(ex["images"][0]).shape == (28, 28)
    assert set(np.unique(np.asarray(ex["x"]))) <= {0.0, 1.0}  # a Bernoulli model's items are binary
    rows = client.get(f"/api/models/{TABLE}/examples").json()["rows"]
    assert len(rows[0]) == len(models[TABLE]["columns"])
    methods = client.get("/api/methods").json()
    gvi = {o["name"]: o for o in methods["gvi"]["options"]}
    assert gvi["steps"]["type"] == "int" and gvi["lr"]["type"] == "float"
    assert "encoder" not in {o["name"] for o in methods["ipa"]["options"]}  # no paths from a client


def test_page_assets_and_openapi(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and '<canvas id="editor"' in page.text
    for asset in ("app.js", "app.css"):
        assert client.get(f"/static/{asset}").status_code == 200
    assert "cdn" not in page.text.lower() and "http" not in client.get("/static/app.js").text.replace(
        "HTTP ", ""
    )
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/models", "/api/condition", "/api/design", "/api/jobs", "/api/jobs/{job_id}/events"):
        assert path in paths
    assert client.get("/docs").status_code == 200


# ---- conditioning and design ------------------------------------------------------------------
def test_condition_image_keeps_the_evidence(client: TestClient, digit: list) -> None:
    body = {"model": IMAGE, "x": digit, "mask": TOP, "method": "ipa", "n": 5, "arrays": True}
    r = client.post("/api/condition", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["completions"]) == 5 and out["observed"] == 14 * 28
    assert np.isfinite(out["c_elbo"]) and out["diagnostics"]["method"] == "ipa"
    completions = np.asarray(out["arrays"]["completions"])  # [n, 1, 28, 28]
    truth, seen = np.asarray(digit), np.asarray(TOP, dtype=bool)[None]
    assert completions.shape == (5, 1, 28, 28)
    assert np.array_equal(completions[:, seen], np.broadcast_to(truth[seen], (5, int(seen.sum()))))
    std = np.asarray(out["arrays"]["std"])
    assert np.all(std[seen] == 0) and std[~seen].max() > 0.05  # unsure only where it cannot see
    assert decode(out["completions"][0]).shape == (28, 28) and decode(out["std"]).shape == (28, 28, 3)
    # the same seed gives the same answer
    again = client.post("/api/condition", json=body).json()
    assert again["arrays"]["completions"] == out["arrays"]["completions"]


def test_condition_from_uploaded_png_and_mask_png(client: TestClient) -> None:
    picture = np.zeros((56, 84), np.uint8)  # wider than the model: centre-cropped, then resized
    picture[10:46, 40:46] = 255
    mask = np.zeros((28, 28), np.uint8)
    mask[:, :14] = 255
    body = {"model": IMAGE, "image": encode(picture), "mask": encode(mask), "method": "ipa", "n": 2}
    out = client.post("/api/condition", json=body).json()
    assert out["observed"] == 28 * 14 and any("resized to 28x28" in n for n in out["notes"])
    up = client.post(f"/api/models/{IMAGE}/image", json={"image": "data:image/png;base64," + encode(picture)})
    x = np.asarray(up.json()["x"])
    assert x.shape == (1, 28, 28) and set(np.unique(x)) <= {0.0, 1.0} and x.sum() > 10


def test_condition_table_in_raw_units(client: TestClient) -> None:
    row = client.get(f"/api/models/{TABLE}/examples").json()["rows"][0]
    evidence = [v if j < 6 else None for j, v in enumerate(row)]
    out = client.post("/api/condition", json={"model": TABLE, "x": evidence, "n": 3, "method": "ipa"}).json()
    assert out["mask"] == [1] * 6 + [0] * (len(row) - 6)
    for completion in out["completions"]:
        assert np.allclose(completion[:6], row[:6], rtol=1e-5)
    lo, hi = np.asarray(out["interval90"])
    mean = np.asarray(out["mean"])
    assert np.all(lo[6:] <= mean[6:]) and np.all(mean[6:] <= hi[6:]) and np.all(hi[6:] > lo[6:])
    assert np.allclose(out["std"][:6], 0, atol=1e-6)


def test_design_image_and_table(client: TestClient, digit: list) -> None:
    out = client.post("/api/design", json={"model": IMAGE, "x": digit, "mask": TOP, "completions": 8}).json()
    eig = [c["eig"] for c in out["candidates"]]
    assert eig == sorted(eig, reverse=True) and len(eig) == 49  # a 7 x 7 grid of 4 x 4 glimpses
    best = out["candidates"][0]
    assert best["box"][3] > 14  # the best glimpse shows pixels it has not seen
    assert decode(out["heat"]).shape == (28, 28, 3) and out["eig_max"] == pytest.approx(eig[0])
    seen = [c for c in out["candidates"] if c["box"][3] <= 14]
    assert all(abs(c["eig"]) < 1e-6 for c in seen) and eig[0] > 1e-3
    row = client.get(f"/api/models/{TABLE}/examples").json()["rows"][0]
    table = client.post("/api/design", json={"model": TABLE, "x": row[:3] + [None] * (len(row) - 3)}).json()
    names = {c["name"] for c in table["candidates"]}
    assert "target" not in names and "alcohol" in names and table["score"] == "LatentEIG"


# ---- jobs: progress, cancel, time limit, a full queue, no blocking ----------------------------
def wait(client: TestClient, job_id: str, timeout: float = 60.0) -> dict:
    end = time.time() + timeout
    while time.time() < end:
        state = client.get(f"/api/jobs/{job_id}").json()
        if state["state"] in ("done", "failed", "cancelled"):
            return state
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def long_fit(digit: list, steps: int = 200_000) -> dict:
    request = {"model": IMAGE, "x": digit, "mask": TOP, "method": "gvi", "options": {"steps": steps}}
    return {"kind": "condition", "request": request}


def test_job_progress_events_and_cancel(client: TestClient, digit: list) -> None:
    job = client.post("/api/jobs", json=long_fit(digit))
    assert job.status_code == 202
    job_id = job.json()["id"]
    for _ in range(200):
        state = client.get(f"/api/jobs/{job_id}").json()
        if state["done"] > 5:
            break
        time.sleep(0.02)
    assert state["state"] == "running" and state["phase"] == "gvi" and state["total"] == 200_000
    client.delete(f"/api/jobs/{job_id}")
    final = wait(client, job_id, 10)
    assert final["state"] == "cancelled" and "cancelled" in final["error"] and final["done"] < 200_000
    with client.stream("GET", f"/api/jobs/{job_id}/events") as events:
        lines = [line for line in events.iter_lines() if line.startswith("data:")]
    assert '"state": "cancelled"' in lines[-1]
    done = client.post("/api/jobs", json={"kind": "condition", "request": long_fit(digit, 20)["request"]})
    finished = wait(client, done.json()["id"])
    assert finished["state"] == "done" and len(finished["result"]["completions"]) == 8
    healthy(client)


def test_a_long_fit_does_not_block_a_fast_one(client: TestClient, digit: list) -> None:
    job_id = client.post("/api/jobs", json=long_fit(digit)).json()["id"]
    try:
        for _ in range(400):
            if client.get(f"/api/jobs/{job_id}").json()["done"] > 0:
                break
            time.sleep(0.025)
        start = time.perf_counter()
        fast = client.post("/api/condition", json={"model": IMAGE, "x": digit, "mask": TOP, "method": "ipa"})
        assert fast.status_code == 200 and time.perf_counter() - start < 5.0
        assert client.get(f"/api/jobs/{job_id}").json()["state"] == "running"
    finally:
        client.delete(f"/api/jobs/{job_id}")
        wait(client, job_id, 10)


def test_time_limit_and_full_queue(digit: list) -> None:
    with client_for(workers=1, queue=2, time_limit=0.5) as c:
        slow = c.post("/api/condition", json=long_fit(digit)["request"])
        error(slow, 504, "time limit")
    with client_for(workers=1, queue=2, time_limit=60.0) as c:
        first = [c.post("/api/jobs", json=long_fit(digit)).json()["id"] for _ in range(2)]
        full = c.post("/api/jobs", json=long_fit(digit))
        error(full, 503, "queue")
        assert full.headers["retry-after"] == "1"
        error(c.post("/api/condition", json=long_fit(digit)["request"]), 503, "job slots")
        for job_id in first:
            c.delete(f"/api/jobs/{job_id}")
            assert wait(c, job_id, 10)["state"] == "cancelled"
        assert c.post("/api/condition", json={"model": IMAGE, "x": digit, "mask": TOP}).status_code == 200
        healthy(c)


# ---- bad requests -----------------------------------------------------------------------------
def post(client: TestClient, path: str, **body: Any) -> Any:
    return client.post(path, json=body)


@pytest.mark.parametrize(
    ("change", "status", "fragment"),
    [
        ({"model": "nope"}, 404, "model: unknown 'nope'"),
        ({"model": "../../etc/passwd"}, 404, "model: unknown"),
        ({"method": "magic"}, 400, "method: unknown 'magic'"),
        ({"method": "gvi", "options": {"stpes": 3}}, 400, "options: ['stpes'] not known to method 'gvi'"),
        ({"method": "gvi", "options": {"steps": "many"}}, 400, "steps: expected int"),
        ({"method": "gvi", "options": {"iw": True}}, 400, "iw: expected int"),
        ({"method": "ipa", "options": {"encoder": "/etc/passwd"}}, 400, "cannot be set through the server"),
        ({"n": 1000}, 400, "n: at most 64"),
        ({"n": 0}, 422, "n:"),
        ({"x": [[0.5] * 27] * 28}, 400, "x: expected an image of shape [1, 28, 28]"),
        ({"x": [[2.0] * 28] * 28}, 400, "x: pixel values must be in [0, 1]"),
        ({"x": [[1, 2], [3]]}, 400, "x: expected nested lists of numbers"),
        ({"mask": [[1] * 28] * 27}, 400, "mask: expected [28][28]"),
        ({"mask": [[0.5] * 28] * 28}, 400, "mask: expected 0/1"),
        ({"mask": [[1] * 28] * 28}, 400, "mask"),
        ({"image": "not base64!"}, 400, "image: not valid base64"),
        ({"image": base64.b64encode(b"plain text").decode()}, 400, "image: not a PNG or JPEG"),
        ({"unexpected": 1}, 422, "unexpected"),
        ({"method": "grid", "model": TABLE, "x": [1.0] * 14, "mask": [1] + [0] * 13}, 400, "cannot run on"),
        ({"model": TABLE, "x": [1.0, None]}, 400, "x: expected 14 values"),
        (
            {"model": TABLE, "x": [None] * 14, "mask": [1] + [0] * 13},
            400,
            "marked observed but have no value",
        ),
    ],
)
def test_bad_condition_requests(
    client: TestClient, digit: list, change: dict, status: int, fragment: str
) -> None:
    body = {"model": IMAGE, "x": digit, "mask": TOP, "method": "ipa", **change}
    if "image" in change:
        body.pop("x")
    error(client.post("/api/condition", json=body), status, fragment)
    healthy(client)


def test_nan_and_empty_evidence(client: TestClient, digit: list) -> None:
    body = {"model": IMAGE, "x": [[float("nan")] * 28] * 28, "mask": TOP}
    r = client.post("/api/condition", content=json.dumps(body), headers={"Content-Type": "application/json"})
    error(r, 400, "x: observed pixels must be finite")
    unobserved_nan = {"model": IMAGE, "x": [[float("nan")] * 28] * 28, "mask": [[0] * 28] * 28}
    nothing = client.post(
        "/api/condition", content=json.dumps(unobserved_nan), headers={"Content-Type": "application/json"}
    )
    assert nothing.status_code == 200  # no evidence: draws of the prior, and the fit says so
    assert "observe nothing" in nothing.json()["diagnostics"]["note"]


def test_bad_images(client: TestClient) -> None:
    big = encode(np.zeros((3000, 10), np.uint8))
    error(post(client, "/api/condition", model=IMAGE, image=big, mask=TOP), 400, "larger than the 2048x2048")
    buffer = io.BytesIO()
    Image.new("L", (28, 28)).save(buffer, format="GIF")
    gif = base64.b64encode(buffer.getvalue()).decode()
    error(
        post(client, "/api/condition", model=IMAGE, image=gif, mask=TOP), 400, "expected PNG or JPEG, got GIF"
    )
    error(
        post(client, f"/api/models/{TABLE}/image", image=encode(np.zeros((28, 28), np.uint8))),
        400,
        "table model",
    )
    jpeg = encode(np.full((28, 28), 255, np.uint8), "JPEG")
    assert post(client, "/api/condition", model=IMAGE, image=jpeg, mask=TOP).status_code == 200


def test_malformed_bodies(client: TestClient) -> None:
    bad = client.post("/api/condition", content=b'{"model": ', headers={"Content-Type": "application/json"})
    error(bad, 400, "body: malformed JSON")
    error(client.post("/api/condition", json=[1, 2]), 422, "")
    error(client.post("/api/jobs", json={"kind": "train", "request": {}}), 422, "kind")
    error(client.post("/api/jobs", json={"kind": "condition", "request": {"x": 1}}), 422, "request.model")
    error(client.get("/api/jobs/0123"), 404, "job: unknown")
    error(client.delete("/api/jobs/0123"), 404, "job: unknown")
    error(client.get("/api/models/nope/examples"), 404, "model: unknown")
    healthy(client)


def test_oversized_uploads(client: TestClient) -> None:
    noise = np.random.default_rng(0).integers(0, 255, (1500, 1500), dtype=np.uint8)
    r = post(client, "/api/condition", model=IMAGE, image=encode(noise), mask=TOP)
    error(r, 413, "body: larger than the 1000000 bytes")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"model": "' + b"a" * 600_000
        yield b"a" * 600_000 + b'"}'

    r = client.post("/api/condition", content=chunks(), headers={"Content-Type": "application/json"})
    error(r, 413, "body: larger than")
    healthy(client)


def test_config_and_host_checks() -> None:
    from condvae.errors import CondVAEError

    with pytest.raises(CondVAEError, match="models: \\['nope'\\] are not bundled"):
        create_app(ServeConfig(models=("nope",)))
    with pytest.raises(CondVAEError, match="queue: 2 is smaller than workers"):
        ServeConfig(workers=2, queue=2)
    with pytest.raises(CondVAEError, match="time_limit"):
        ServeConfig(time_limit=0)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")


# ---- batching under load ----------------------------------------------------------------------
def test_a_batch_answers_each_query_as_alone(client: TestClient) -> None:
    """Jobs of one key that wait together share a fit; each answer equals its answer alone."""
    from condvae.app import service
    from condvae.app.schemas import ConditionRequest

    app = client.app
    bank, cfg = app.state.bank, app.state.config  # type: ignore[attr-defined]
    examples = client.get(f"/api/models/{IMAGE}/examples").json()["x"]
    rng = np.random.default_rng(0)
    masks = [(rng.random((28, 28)) < f).astype(int).tolist() for f in (0.1, 0.3, 0.6)]
    for method, options in (("ipa", {}), ("gvi", {"steps": 40})):
        reqs = [
            ConditionRequest(
                model=IMAGE, x=examples[i], mask=masks[i], method=method, options=options, n=3, arrays=True
            )
            for i in range(3)
        ]
        jobs = [service.prepare_condition(bank, cfg, r) for r in reqs]
        assert len({service.condition_key(j) for j in jobs}) == 1
        together = service.run_conditions(jobs)
        for job, answer in zip(jobs, together, strict=True):
            (alone,) = service.run_conditions([job])
            assert np.allclose(answer["arrays"]["completions"], alone["arrays"]["completions"], atol=1e-5)
            assert np.allclose(answer["arrays"]["std"], alone["arrays"]["std"], atol=1e-5)
            assert answer["c_elbo"] == pytest.approx(alone["c_elbo"], abs=1e-3)


def test_concurrent_requests_are_batched_and_one_bad_query_fails_alone(digit: list) -> None:
    import concurrent.futures

    def burst(c: TestClient, bodies: list[dict]) -> list[Any]:
        slow = {
            "model": IMAGE,
            "x": digit,
            "mask": TOP,
            "method": "importance",
            "options": {"particles": 50_000},
        }
        blocker = c.post("/api/jobs", json={"kind": "condition", "request": slow}).json()["id"]  # busy lane
        with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
            answers = [pool.submit(c.post, "/api/condition", json=b) for b in bodies]
            for _ in range(200):
                if c.get("/api/health").json()["jobs"]["queued"] == len(bodies):
                    break
                time.sleep(0.05)
            wait(c, blocker)
            return [a.result() for a in answers]

    with client_for(workers=1, queue=32) as c:
        bodies = [{"model": IMAGE, "x": digit, "mask": TOP, "method": "ipa", "n": 2} for _ in range(6)]
        answers = burst(c, bodies)
        assert [a.status_code for a in answers] == [200] * 6
        assert answers[0].json()["completions"] == answers[5].json()["completions"]
        jobs = list(c.app.state.queue.jobs.values())  # type: ignore[attr-defined]
        assert max(j.batch for j in jobs) == 6  # the waiting ipa requests shared one fit
        bodies[3] = {**bodies[3], "mask": [[1] * 28] * 28}  # observes everything: the library refuses it
        answers = burst(c, bodies)
        assert [a.status_code for a in answers] == [200, 200, 200, 400, 200, 200]
        assert "mask" in answers[3].json()["detail"]
        healthy(c)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 64, 48), (1, 5, 7)])
def test_png_writer_round_trips_through_pillow(shape: tuple[int, int, int]) -> None:
    import torch

    from condvae.app.imaging import png

    image = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    expected = (image.numpy() * 255).round().astype(np.uint8)
    expected = expected[0] if shape[0] == 1 else expected.transpose(1, 2, 0)
    assert np.array_equal(decode(png(image)), expected)


# ---- the command --------------------------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_serve_refuses_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from condvae.cli import main

    assert main(["serve", "--port", "70000"]) == 2
    assert "port: expected 1..65535" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["serve", "--port", str(taken.getsockname()[1])]) == 2
    assert "port: cannot listen on 127.0.0.1" in capsys.readouterr().err
    assert main(["serve", "--port", str(free_port()), "--models", "nope"]) == 2
    assert "models: ['nope'] are not bundled" in capsys.readouterr().err
    assert main(["serve", "--port", str(free_port()), "--max-body", "lots"]) == 2
    assert "max-body" in capsys.readouterr().err


def test_cli_serve_starts_and_says_where_it_listens() -> None:
    import subprocess
    import sys

    import httpx

    port = free_port()
    command = [sys.executable, "-m", "condvae", "serve", "--host", "0.0.0.0", "--port", str(port)]
    server = subprocess.Popen([*command, "--models", TABLE], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert [m["name"] for m in httpx.get(f"http://127.0.0.1:{port}/api/models").json()] == [TABLE]
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=30)
    assert f"http://0.0.0.0:{port}/" in out and "not only on this machine" in out


def test_option_checks_are_cached_by_type_too() -> None:
    from condvae.app.service import check_options
    from condvae.errors import CondVAEError

    assert check_options("gvi", {"iw": 1}) == {"iw": 1}
    with pytest.raises(CondVAEError, match="iw: expected int"):
        check_options("gvi", {"iw": True})  # True == 1 and hashes alike: the cache must tell them apart


def test_operator_configured_models_only_by_name(tmp_path: Path) -> None:
    """``ServeConfig.extra`` names a model directory the operator chose; a client still names
    it, never its path."""
    import torch

    from condvae import save_pretrained
    from condvae.models import build_model

    torch.manual_seed(0)
    mine = build_model({"architecture": "mlp", "latent_dim": 2, "hidden": [8], "data_shape": [1, 28, 28]})
    save_pretrained(mine, tmp_path / "mine")
    with TestClient(create_app(ServeConfig(models=(TABLE,), extra={"mine": str(tmp_path / "mine")}))) as c:
        names = [m["name"] for m in c.get("/api/models").json()]
        assert names == [TABLE, "mine"]
        x = c.get("/api/models/mine/examples").json()["x"][0]
        assert (
            c.post(
                "/api/condition",
                json={"model": "mine", "x": x, "mask": TOP, "method": "gvi", "options": {"steps": 5}},
            ).status_code
            == 200
        )
        error(
            c.post("/api/condition", json={"model": str(tmp_path / "mine"), "x": x, "mask": TOP}),
            404,
            "model:",
        )
