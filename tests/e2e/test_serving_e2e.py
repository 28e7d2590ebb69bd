"""Serving end to end against `moeplane up` (a subprocess: API, Celery worker and beat) on the
session's local Ray head, with PostgreSQL/Redis when CI provides them (else SQLite + SQLite
broker). Everything goes through HTTP, as a tenant's application would: the official `openai`
client, raw SSE, the deployments API. Only the checks need more: the database (usage rows), Ray
(shard processes to kill, a replica's shard report).

Deployments of qwen3-moe-tiny: "one" (S=1) and "two" (S=2) for equal greedy output, streaming,
metering, limits and a killed shard; "auto" for autoscaling; a rolling update of "one".
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest
from sqlalchemy import func, select

from moeplane.config import Settings
from moeplane.store.db import Database
from moeplane.store.migrate import upgrade
from moeplane.store.models import Deployment, InferenceRequest, ModelVersion
from moeplane.store.registry import register_version
from tests.conftest import PG_URL, REDIS_URL, _free_port, _truncate_all, clear_serve_apps
from tests.factories import make_tenant

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ADMIN_KEY = "mp-e2e-serving-admin-key-0123456789"
QUESTIONS = ["Where is my order?", "How do I return shoes?", "Do you ship to Norway?"]


@pytest.fixture(scope="module")
def platform(tmp_path_factory, ray_head, request):
    home = tmp_path_factory.mktemp("serving")
    if PG_URL:
        url = request.getfixturevalue("pg_migrated")
        _truncate_all(Database(url))
    else:
        url = f"sqlite:///{home / 'moeplane.db'}"
        upgrade(url)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOEPLANE_")} | {
        "MOEPLANE_HOME": str(home / "home"),
        "MOEPLANE_DATABASE_URL": url,
        "MOEPLANE_STORAGE_URI": (home / "storage").as_uri(),
        "MOEPLANE_RAY_ADDRESS": ray_head["address"],
        "MOEPLANE_RAY_DASHBOARD_URL": ray_head["dashboard"],
        "MOEPLANE_API_PORT": str(port),
        "MOEPLANE_ADMIN_KEY": ADMIN_KEY,
        "MOEPLANE_RECONCILE_INTERVAL_S": "1",
        "HF_HUB_OFFLINE": "1",
    }
    if REDIS_URL:
        env["MOEPLANE_REDIS_URL"] = REDIS_URL
    log = home / "up.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moeplane.cli", "up"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while "press Ctrl-C" not in log.read_text():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(1)
    db = Database(url)
    settings = Settings(ray_dashboard_url=ray_head["dashboard"])
    try:
        yield {"url": base, "db": db, "home": home, "ray": ray_head, "settings": settings}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        # the Serve applications outlive `up`: free the session's Ray for later tests
        clear_serve_apps(ray_head["dashboard"])
        db.dispose()


def _logs(env) -> str:
    logs = env["home"] / "home" / "logs"
    parts = [(env["home"] / "up.log").read_text()[-2000:]]
    parts += [p.read_text()[-3000:] for p in sorted(logs.glob("*.log"))]
    return "\n".join(parts)


def _api(env, tenant) -> httpx.Client:
    return httpx.Client(base_url=env["url"], headers=tenant.headers, timeout=120)


def _wait_running(env, client, dep_id, *, generation=None, timeout=300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dep = client.get(f"/v1/deployments/{dep_id}").json()
        gen = generation or dep["generation"]
        if dep["status"] == "running" and dep["observed_generation"] >= gen:
            return dep
        assert dep["status"] != "failed", dep
        time.sleep(1)
    raise AssertionError(f"{dep_id} not running: {dep}\n{_logs(env)}")


def _chat(client, model, question, **extra) -> httpx.Response:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 16,
        "temperature": 0,
    } | extra
    return client.post("/v1/chat/completions", json=body)


@pytest.fixture(scope="module")
def acme(platform):
    tenant = make_tenant(
        platform["db"], name="acme", rpm=100_000, tpm=10_000_000, max_deployments=5, max_replicas=8
    )
    with _api(platform, tenant) as client:
        ids = {}
        # packed copies of the expert weights on in one, off in the other: same tokens
        for name, shards, packed in (("one", 1, "off"), ("two", 2, "on")):
            body = {
                "name": name,
                "model": "qwen3-moe-tiny",
                "expert_shards": shards,
                "resources": {"cpus_per_shard": 0.25, "packed_weights": packed},
                "max_batch_size": 8,
            }
            created = client.post("/v1/deployments", json=body)
            assert created.status_code == 201, created.text
            ids[name] = created.json()["id"]
        for dep_id in ids.values():
            _wait_running(platform, client, dep_id)
    return tenant, ids


def test_sharded_and_unsharded_replicas_agree_token_for_token(platform, acme):
    tenant, ids = acme
    from moeplane.modeling import is_expert_key, load_model

    with _api(platform, tenant) as client:
        answers = {}
        for name in ("one", "two"):
            answers[name] = []
            for q in QUESTIONS:
                response = _chat(client, name, q, max_tokens=12)
                assert response.status_code == 200, response.text
                answers[name].append(response.json())
    for a, b in zip(answers["one"], answers["two"], strict=True):
        assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]
        assert a["usage"] == b["usage"] and a["usage"]["completion_tokens"] > 0
    # ... and equal transformers' own greedy generate on the same checkpoint
    with platform["db"].session() as session:
        dep = session.get(Deployment, ids["one"])
        path = session.get(ModelVersion, dep.model_version_id).artifact_uri.removeprefix("file://")
    from transformers import AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(path), load_model(path)
    for q, got in zip(QUESTIONS, answers["one"], strict=True):
        ids_ = tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, return_tensors="pt"
        )
        ids_ = ids_["input_ids"] if hasattr(ids_, "keys") else ids_
        out = model.generate(ids_, max_new_tokens=12, do_sample=False)
        expected = tokenizer.decode(out[0, ids_.shape[1] :], skip_special_tokens=True)
        assert got["choices"][0]["message"]["content"] == expected
    # each shard of "two" holds exactly half of the experts' parameters
    with _api(platform, tenant) as client:  # replicas save their shard report every few seconds
        _wait_until(
            lambda: client.get(f"/v1/deployments/{ids['two']}/experts").json()["shards"],
            "the replica reported its shards",
        )
        experts = client.get(f"/v1/deployments/{ids['two']}/experts").json()
    shards = experts["shards"]
    assert experts["tokens"] > 0 and len(experts["counts"]) == 2  # 2 MoE layers
    assert [s["shard_index"] for s in shards] == [0, 1]
    total_experts = sum(p.numel() for n, p in model.named_parameters() if is_expert_key(n))
    assert all(s["expert_param_count"] * 2 == total_experts for s in shards), shards
    assert shards[0]["non_expert_param_count"] == shards[1]["non_expert_param_count"]
    assert (shards[0]["expert_start"], shards[1]["expert_start"]) == (0, 4)


def test_openai_client_streaming_and_exact_metering(platform, acme):
    import openai

    tenant, _ = acme
    client = openai.OpenAI(base_url=platform["url"] + "/v1", api_key=tenant.key)
    db = platform["db"]

    def billed() -> tuple[int, int]:
        with db.session() as session:
            p, c = session.execute(
                select(
                    func.coalesce(func.sum(InferenceRequest.prompt_tokens), 0),
                    func.coalesce(func.sum(InferenceRequest.completion_tokens), 0),
                ).where(InferenceRequest.tenant_id == tenant.id)
            ).one()
        return int(p), int(c)

    before = billed()
    plain = client.chat.completions.create(
        model="one", messages=[{"role": "user", "content": "hello"}], max_tokens=10, temperature=0
    )
    assert plain.object == "chat.completion" and plain.choices[0].finish_reason in (
        "stop",
        "length",
    )
    stream = client.chat.completions.create(
        model="two",
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=10,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed_usage = chunks[-1].usage
    assert chunks[-1].choices == [] and streamed_usage.completion_tokens > 0
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content  # S=2 streamed == S=1 in one piece
    legacy = client.completions.create(model="one", prompt="Order status:", max_tokens=5)
    assert legacy.object == "text_completion" and legacy.usage.completion_tokens <= 5

    expected = [plain.usage, streamed_usage, legacy.usage]
    _wait_until(
        lambda: (
            billed()
            == (
                before[0] + sum(u.prompt_tokens for u in expected),
                before[1] + sum(u.completion_tokens for u in expected),
            )
        ),
        "usage rows equal the usage the client saw",
    )

    # a client that disconnects mid-stream is billed for what was generated
    seen = 0
    with (
        httpx.Client(base_url=platform["url"], headers=tenant.headers, timeout=60) as http,
        http.stream(
            "POST",
            "/v1/chat/completions",
            json={
                "model": "one",
                "messages": [{"role": "user", "content": "tell me a long story"}],
                "max_tokens": 400,
                "temperature": 1.0,
                "seed": 1,
                "stream": True,
            },
        ) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: {"):
                seen += 1
            if seen == 4:
                break
    _wait_until(lambda: _aborted(db, tenant.id), "the aborted request is billed")
    row = _aborted(db, tenant.id)
    assert seen - 1 <= row.completion_tokens < 400, (seen, row.completion_tokens)
    with db.session() as session:
        rows = session.scalars(
            select(InferenceRequest).where(InferenceRequest.tenant_id == tenant.id)
        ).all()
    with _api(platform, tenant) as api:
        totals = api.get("/v1/usage").json()["totals"]
    assert totals["prompt_tokens"] == sum(r.prompt_tokens for r in rows)
    assert totals["completion_tokens"] == sum(r.completion_tokens for r in rows)


def test_chat_command_streams_an_answer(platform, acme):
    tenant, _ = acme
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOEPLANE_")} | {
        "MOEPLANE_API_URL": platform["url"],
        "MOEPLANE_API_KEY": tenant.key,
    }
    chat = subprocess.run(
        [sys.executable, "-m", "moeplane.cli", "chat", "two", "--max-tokens", "8"],
        env=env,
        input="hello\nand again\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert chat.returncode == 0, chat.stderr
    answers = [line for line in chat.stdout.splitlines() if "assistant> " in line]
    assert len(answers) == 2 and all(len(a) > len("you> assistant> ") for a in answers), chat.stdout


def _aborted(db, tenant_id):
    with db.session() as session:
        return session.scalars(
            select(InferenceRequest).where(
                InferenceRequest.tenant_id == tenant_id, InferenceRequest.finish_reason == "abort"
            )
        ).first()


def _wait_until(check, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out: {what}")


def test_tpm_limit_holds_for_concurrent_requests(platform, acme):
    tpm = 400
    tenant = make_tenant(platform["db"], name="thrifty", rpm=10_000, tpm=tpm)
    with _api(platform, tenant) as client:
        body = {"name": "one", "model": "qwen3-moe-tiny", "resources": {"cpus_per_shard": 0.25}}
        dep = client.post("/v1/deployments", json=body).json()
        _wait_running(platform, client, dep["id"])

        def call(i: int) -> httpx.Response:
            return _chat(client, "one", f"question {i}", max_tokens=100)

        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(call, range(8)))
        elapsed = time.monotonic() - started
    ok = [r.json() for r in responses if r.status_code == 200]
    limited = [r for r in responses if r.status_code == 429]
    assert ok and limited, [r.status_code for r in responses]
    assert all(int(r.headers["Retry-After"]) >= 1 for r in limited)
    assert all(r.json()["error"]["type"] == "rate_limit_error" for r in limited)
    reserved = sum(r["usage"]["prompt_tokens"] + 100 for r in ok)
    assert reserved <= tpm + tpm / 60 * elapsed + 1  # the bucket plus what refilled meanwhile


def test_killed_shard_gives_503_not_a_hang_and_the_replica_is_replaced(platform, acme):
    tenant, _ = acme
    results: list[str] = []

    def long_stream() -> None:
        body = {
            "model": "two",
            "messages": [{"role": "user", "content": "a long answer please"}],
            "max_tokens": 2000,
            "temperature": 1.0,
            "stream": True,
        }
        with (
            httpx.Client(base_url=platform["url"], headers=tenant.headers, timeout=120) as http,
            http.stream("POST", "/v1/chat/completions", json=body) as response,
        ):
            if response.status_code != 200:
                response.read()
                results.append(f"http {response.status_code}")
                return
            for line in response.iter_lines():
                if line.startswith("data: ") and '"error"' in line:
                    results.append("error event")
                    return
                if line == "data: [DONE]":
                    results.append("done")
                    return
        results.append("closed")

    threads = [threading.Thread(target=long_stream) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(3)  # the streams are generating
    shards = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "ExpertShard" in " ".join(p.info["cmdline"] or [])
    ]
    assert shards, "no ExpertShard process found"
    shards[0].send_signal(signal.SIGKILL)
    for t in threads:
        t.join(timeout=90)
        assert not t.is_alive(), "an in-flight request hung after its shard died"
    assert results and all(r in ("error event", "http 503") for r in results), results
    # Serve's health check replaces the replica; later requests succeed
    with _api(platform, tenant) as client:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            response = _chat(client, "two", "still there?")
            if response.status_code == 200:
                break
            assert response.status_code == 503, response.text
            time.sleep(2)
        else:
            raise AssertionError(f"the replica was not replaced\n{_logs(platform)}")


def test_rolling_update_under_load_drops_nothing(platform, acme):
    tenant, ids = acme
    with platform["db"].session() as session:
        dep = session.get(Deployment, ids["one"])
        base = session.get(ModelVersion, dep.model_version_id)
        from moeplane.store.registry import get_model

        v2 = register_version(
            session,
            get_model(session, None, "qwen3-moe-tiny"),
            artifact_uri=base.artifact_uri,
            sha256=base.sha256,
            config=base.config,
        )
        v2_id, v2_number = v2.id, v2.version
    failures: list[str] = []
    done = threading.Event()
    served = [0]

    def load() -> None:
        with _api(platform, tenant) as client:
            while not done.is_set():
                response = _chat(client, "one", "ping", max_tokens=4)
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:200]}")
                served[0] += 1

    workers = [threading.Thread(target=load) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        with _api(platform, tenant) as client:
            time.sleep(2)
            patched = client.patch(f"/v1/deployments/{ids['one']}", json={"version": v2_number})
            assert patched.status_code == 200, patched.text
            dep = _wait_running(
                platform, client, ids["one"], generation=patched.json()["generation"]
            )
            assert dep["observed_version_id"] == v2_id
            time.sleep(2)
    finally:
        done.set()
        for w in workers:
            w.join(timeout=60)
    assert served[0] > 5 and failures == [], (served[0], failures)


def test_autoscaling_follows_load_up_and_down(platform, acme):
    tenant, _ = acme
    body = {
        "name": "auto",
        "model": "qwen3-moe-tiny",
        "resources": {"cpus_per_shard": 0.25},
        "autoscaling": {
            "min_replicas": 1,
            "max_replicas": 2,
            "target_ongoing_requests": 1,
            "upscale_delay_s": 1,
            "downscale_delay_s": 3,
        },
    }
    with _api(platform, tenant) as client:
        dep = client.post("/v1/deployments", json=body).json()
        _wait_running(platform, client, dep["id"])
        done = threading.Event()

        def load() -> None:
            with _api(platform, tenant) as c:
                while not done.is_set():
                    _chat(c, "auto", "keep busy", max_tokens=64, temperature=1.0)

        workers = [threading.Thread(target=load) for _ in range(4)]
        for w in workers:
            w.start()
        try:
            _wait_replicas(platform, client, dep["id"], 2)
        finally:
            done.set()
            for w in workers:
                w.join(timeout=60)
        _wait_replicas(platform, client, dep["id"], 1)


def _wait_replicas(env, client, dep_id, n, timeout=150) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dep = client.get(f"/v1/deployments/{dep_id}").json()
        if dep["replicas"]["current"] == n:
            return
        time.sleep(1)
    raise AssertionError(f"never reached {n} replicas: {dep}\n{_logs(env)}")


def test_reconciler_recreates_a_deleted_serve_application(platform, acme):
    tenant, ids = acme
    settings = platform["settings"]
    url = f"{platform['ray']['dashboard']}/api/serve/applications/"
    headers = settings.ray_auth_headers()
    with platform["db"].session() as session:
        app_name = session.get(Deployment, ids["two"]).app_name
    details = httpx.get(url, headers=headers, timeout=30).json()
    keep = [
        app["deployed_app_config"]
        for name, app in details["applications"].items()
        if name != app_name and app.get("deployed_app_config")
    ]
    put = httpx.put(
        url, json={"proxy_location": "Disabled", "applications": keep}, headers=headers, timeout=60
    )
    assert put.status_code == 200, put.text
    with _api(platform, tenant) as client:
        _wait_until(
            lambda: app_name in httpx.get(url, headers=headers, timeout=30).json()["applications"],
            "the reconciler recreated the application",
            timeout=60,
        )
        _wait_running(platform, client, ids["two"])
        deadline = time.monotonic() + 120
        while (response := _chat(client, "two", "back?")).status_code != 200:
            assert time.monotonic() < deadline, response.text
            time.sleep(2)
    assert json.loads(response.text)["usage"]["completion_tokens"] > 0
