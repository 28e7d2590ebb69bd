"""rpm limits on tenant routes: concurrent requests never get past the limit (memory and Redis)."""

from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from moeplane.api.app import create_app
from moeplane.limits import MemoryLimiter, RedisLimiter
from tests.factories import make_tenant

REDIS_URL = os.environ.get("MOEPLANE_TEST_REDIS_URL")


def _limiter(kind: str):
    if kind == "memory":
        return MemoryLimiter()
    if not REDIS_URL:
        pytest.skip("MOEPLANE_TEST_REDIS_URL is not set (Redis tests run in CI)")
    return RedisLimiter(REDIS_URL)


@pytest.mark.parametrize("kind", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_fifty_simultaneous_requests_admit_at_most_rpm(
    kind, settings, database, live_server_factory
):
    limiter = _limiter(kind)
    # a fresh tenant id per run: Redis buckets outlive the test database
    tenant = make_tenant(database, name=f"rl-{uuid.uuid4().hex[:8]}", rpm=10)
    server = live_server_factory(create_app(settings, db=database, limiter=limiter))

    def call(_: int) -> httpx.Response:
        return httpx.get(f"{server.url}/v1/me", headers=tenant.headers, timeout=60)

    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(call, range(50)))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429}
    assert 1 <= codes.count(200) <= 10
    limited = [r for r in responses if r.status_code == 429]
    assert len(limited) >= 40
    for response in limited:
        assert int(response.headers["Retry-After"]) >= 1
        assert response.json()["error"]["type"] == "rate_limit_error"


def test_limits_are_per_tenant(client, database):
    busy = make_tenant(database, rpm=2)
    calm = make_tenant(database, rpm=2)
    codes = [client.get("/v1/me", headers=busy.headers).status_code for _ in range(4)]
    assert codes == [200, 200, 429, 429]
    assert client.get("/v1/me", headers=calm.headers).status_code == 200


def test_redis_down_is_503_not_a_free_pass(settings, database):
    from fastapi.testclient import TestClient

    tenant = make_tenant(database)
    dead = RedisLimiter("redis://127.0.0.1:1/0")
    with TestClient(create_app(settings, db=database, limiter=dead)) as client:
        response = client.get("/v1/me", headers=tenant.headers)
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "service_unavailable_error"
