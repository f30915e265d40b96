"""/api/clm through the API: 202 with the job, 409 while one runs, auth, validation, status."""

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from app.bootstrap import Container, bootstrap
from app.core.settings import Settings
from app.domains.learning.clm import ClmConfig, ContinuousLearning
from app.domains.signals.registry.events import ModelPromoted
from tests.domains.learning.test_clm import KINDS, SYMBOLS, FakeMarket, Pools, StubJob, settled
from tests.support import EventRecorder, FakeClock, running

API = tuple[httpx.AsyncClient, Container, StubJob]


@pytest.fixture
async def clm_api(
    make_settings: Callable[..., Settings], tmp_path: Path, clock: FakeClock, recorder: EventRecorder
) -> AsyncIterator[API]:
    """The app with a ContinuousLearning whose jobs are stubs on a thread (no training)."""
    container = bootstrap(make_settings(model_dir=str(tmp_path / "models")), clock=clock, handlers=recorder.table())
    stub = StubJob()
    container.clm = ContinuousLearning(
        container.settings, ClmConfig(), FakeMarket(), Pools(), clock, bus=container.bus, job=stub
    )
    try:
        async with running(container) as client:
            yield client, container, stub
    finally:
        stub.release.set()
        await container.clm.stop()


async def test_status_when_idle(clm_api: API) -> None:
    client, _, _ = clm_api
    response = await client.get("/api/clm/status")
    assert response.status_code == 200
    body = response.json()
    assert (body["running"], body["current"], body["last"], body["last_check"]) == (False, None, None, None)
    assert body["next_run_at"] is None and body["config"]["symbols"] == list(SYMBOLS)
    assert body["config"]["enabled"] is False and body["config"]["min_new_samples"] == 24


async def test_retrain_is_202_then_409_then_done(clm_api: API, recorder: EventRecorder) -> None:
    client, container, stub = clm_api
    started = await client.post("/api/clm/retrain", json={"reason": "new candles"}, headers={"X-Actor": "alice"})
    assert started.status_code == 202, started.text
    job = started.json()
    assert (job["trigger"], job["reason"], job["actor"]) == ("manual", "new candles", "alice")
    assert job["id"] and job["started_at"] and job["data_until"]

    again = await client.post("/api/clm/retrain", json={"reason": "once more"})
    assert again.status_code == 409
    assert again.json()["error"] == "conflict" and again.json()["job"]["id"] == job["id"]

    running_now = (await client.get("/api/clm/status")).json()
    assert running_now["running"] is True and running_now["current"]["id"] == job["id"]

    stub.release.set()
    await settled(container.clm)
    done = (await client.get("/api/clm/status")).json()
    assert done["running"] is False and done["current"] is None
    last = done["last"]
    assert (last["id"], last["ok"], last["error"]) == (job["id"], True, None)
    assert set(last["summary"]["versions"]) == KINDS
    assert last["summary"]["decisions"]["ensemble"]["promoted"] is True
    await container.bus.drain()
    assert {e.kind for e in recorder.of(ModelPromoted)} == KINDS


async def test_a_failed_job_shows_in_status(clm_api: API) -> None:
    client, container, stub = clm_api
    stub.error = RuntimeError("out of memory")
    stub.release.set()
    assert (await client.post("/api/clm/retrain", json={"reason": "will fail"})).status_code == 202
    await settled(container.clm)
    last = (await client.get("/api/clm/status")).json()["last"]
    assert last["ok"] is False and last["summary"] is None
    assert last["error"] == {"type": "RuntimeError", "message": "out of memory"}
    assert (await client.get("/health")).status_code == 200


async def test_retrain_needs_the_api_key(clm_api: API) -> None:
    client, _, stub = clm_api
    response = await client.post("/api/clm/retrain", json={"reason": "no key"}, headers={"X-API-Key": "wrong"})
    assert response.status_code == 401
    assert not stub.jobs and (await client.get("/api/clm/status")).json()["running"] is False


@pytest.mark.parametrize("body", [{}, {"reason": "x"}, {"reason": "fine", "extra": 1}])
async def test_retrain_body_is_validated(clm_api: API, body: dict[str, object]) -> None:
    client, _, stub = clm_api
    response = await client.post("/api/clm/retrain", json=body)
    assert response.status_code == 422 and response.json()["error"] == "validation_error"
    assert not stub.jobs


async def test_openapi_documents_the_retrain_body(clm_api: API) -> None:
    client, _, _ = clm_api
    schema = (await client.get("/openapi.json")).json()
    retrain = schema["paths"]["/api/clm/retrain"]["post"]
    assert {"202", "409"} <= set(retrain["responses"])
    assert schema["components"]["schemas"]["RetrainBody"]["examples"][0]["reason"]
    assert "/api/clm/status" in schema["paths"]
