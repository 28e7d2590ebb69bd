"""Fine-tuning jobs API (no Ray here): validation, estimates, atomic quotas, cancel, isolation,
and the scheduler tick against the database."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from moeplane.jobs.admission import admit_jobs
from moeplane.jobs.scheduler import Resources
from tests.factories import chat_jsonl, make_tenant


def _file(client, tenant, purpose="fine-tune") -> str:
    response = client.post(
        "/v1/files",
        headers=tenant.headers,
        data={"purpose": purpose},
        files={"file": ("t.jsonl", chat_jsonl(6))},
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _job(client, tenant, file_id, **extra):
    body = {"model": "qwen3-moe-tiny", "training_file": file_id} | extra
    return client.post("/v1/fine_tuning/jobs", json=body, headers=tenant.headers)


def test_create_job_openai_shape_and_events(client, database, catalog):
    tenant = make_tenant(database)
    file_id = _file(client, tenant)
    created = _job(
        client,
        tenant,
        file_id,
        suffix="support",
        seed=7,
        hyperparameters={"n_epochs": 2, "batch_size": 2},
    )
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["object"] == "fine_tuning.job" and job["id"].startswith("ftjob-")
    assert job["status"] == "validating_files" and job["model"] == "qwen3-moe-tiny"
    assert job["training_file"] == file_id and job["seed"] == 7
    assert job["hyperparameters"] == {
        "n_epochs": 2,
        "batch_size": 2,
        "learning_rate_multiplier": 1.0,
    }
    assert job["method"]["type"] == "lora" and job["fine_tuned_model"] is None
    assert job["estimated_tokens"] > 0 and job["estimated_compute"] >= 1
    assert job["error"] is None and job["finished_at"] is None

    assert client.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=tenant.headers).json() == job
    listed = client.get("/v1/fine_tuning/jobs", headers=tenant.headers).json()
    assert [j["id"] for j in listed["data"]] == [job["id"]]
    events = client.get(f"/v1/fine_tuning/jobs/{job['id']}/events", headers=tenant.headers)
    messages = [e["message"] for e in events.json()["data"]]
    assert any("Created" in m for m in messages) and any("Estimated" in m for m in messages)
    assert events.json()["data"][0]["object"] == "fine_tuning.job.event"
    checkpoints = client.get(
        f"/v1/fine_tuning/jobs/{job['id']}/checkpoints", headers=tenant.headers
    )
    assert checkpoints.json() == {"object": "list", "data": [], "has_more": False}


def test_bad_inputs_get_clear_errors_and_create_nothing(client, database, catalog):
    tenant, other = make_tenant(database), make_tenant(database)
    mine = _file(client, tenant)
    theirs = _file(client, other)
    knowledge = client.post(
        "/v1/files",
        headers=tenant.headers,
        data={"purpose": "knowledge"},
        files={"file": ("kb.md", b"# Help\nAsk us anything.\n")},
    ).json()["id"]
    cases = [
        ({"model": "gpt-17"}, 404, "model"),
        ({"training_file": theirs}, 404, "training_file"),
        ({"training_file": "file-missing"}, 404, "training_file"),
        ({"training_file": knowledge}, 422, "training_file"),
        ({"hyperparameters": {"n_epochs": 0}}, 422, "hyperparameters.n_epochs"),
        ({"hyperparameters": {"batch_size": 1000}}, 422, "hyperparameters.batch_size"),
        (
            {"hyperparameters": {"learning_rate_multiplier": -1}},
            422,
            "hyperparameters.learning_rate_multiplier",
        ),
        ({"method": "dpo"}, 422, "method"),
        ({"num_workers": 0}, 422, "num_workers"),
        ({"suffix": "bad suffix!"}, 422, "suffix"),
        ({"lora": {"r": 0}}, 422, "lora.r"),
    ]
    for extra, status, param in cases:
        body = {"model": "qwen3-moe-tiny", "training_file": mine} | extra
        response = client.post("/v1/fine_tuning/jobs", json=body, headers=tenant.headers)
        assert response.status_code == status, (extra, response.text)
        assert response.json()["error"]["param"].startswith(param), (extra, response.json())
    assert client.get("/v1/fine_tuning/jobs", headers=tenant.headers).json()["data"] == []


def test_budget_is_checked_before_accepting(client, database, catalog):
    tenant = make_tenant(database, compute_budget=5)
    file_id = _file(client, tenant)
    first = _job(client, tenant, file_id)
    assert first.status_code == 201, first.text
    second = _job(client, tenant, file_id, hyperparameters={"n_epochs": 50})
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "compute_budget"


def test_concurrent_creations_never_exceed_max_concurrent_jobs(
    app, database, catalog, live_server_factory
):
    tenant = make_tenant(database, max_concurrent_jobs=3, rpm=10_000)
    server = live_server_factory(app)
    with httpx.Client(base_url=server.url, headers=tenant.headers, timeout=60) as c:
        file_id = c.post(
            "/v1/files", data={"purpose": "fine-tune"}, files={"file": ("t.jsonl", chat_jsonl(4))}
        ).json()["id"]

    def create(_: int) -> int:
        return httpx.post(
            f"{server.url}/v1/fine_tuning/jobs",
            headers=tenant.headers,
            timeout=60,
            json={"model": "qwen3-moe-tiny", "training_file": file_id},
        ).status_code

    with ThreadPoolExecutor(max_workers=10) as pool:
        codes = list(pool.map(create, range(10)))
    assert codes.count(201) == 3 and codes.count(429) == 7, codes


def test_cancel_queued_job_and_conflicts(client, database, catalog):
    tenant = make_tenant(database)
    job = _job(client, tenant, _file(client, tenant)).json()
    cancelled = client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=tenant.headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["finished_at"] is not None
    again = client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=tenant.headers)
    assert again.status_code == 409
    # a cancelled job frees its slot and its budget
    assert _job(client, tenant, job["training_file"]).status_code == 201


def test_jobs_are_isolated(client, database, catalog):
    a, b = make_tenant(database), make_tenant(database)
    theirs = _job(client, b, _file(client, b)).json()["id"]
    for method, suffix in (
        ("GET", ""),
        ("POST", "/cancel"),
        ("GET", "/events"),
        ("GET", "/checkpoints"),
    ):
        response = client.request(
            method, f"/v1/fine_tuning/jobs/{theirs}{suffix}", headers=a.headers
        )
        assert response.status_code == 404, (method, suffix)
    assert client.get("/v1/fine_tuning/jobs", headers=a.headers).json()["data"] == []
    assert client.get(f"/v1/fine_tuning/jobs/{theirs}", headers=b.headers).json()["status"] != (
        "cancelled"
    )


def test_models_catalog_and_isolation(client, database, catalog):
    tenant = make_tenant(database)
    models = client.get("/v1/models", headers=tenant.headers).json()
    assert {m["id"] for m in models["data"]} == {"qwen3-moe-tiny", "qwen3-tiny"}
    one = client.get("/v1/models/qwen3-moe-tiny", headers=tenant.headers).json()
    assert one["object"] == "model" and one["owned_by"] == "moeplane"
    versions = client.get("/v1/models/qwen3-moe-tiny/versions", headers=tenant.headers).json()
    config = versions["data"][0]["config"]
    assert config["num_experts"] == 8 and config["top_k"] == 2
    assert config["params_active"] < config["params_total"]
    assert client.get("/v1/models/nope", headers=tenant.headers).status_code == 404


def test_scheduler_tick_admits_within_capacity_and_quota(client, database, settings, catalog):
    tenant = make_tenant(database, max_concurrent_jobs=5)
    file_id = _file(client, tenant)
    ids = [_job(client, tenant, file_id, num_workers=2).json()["id"] for _ in range(3)]
    capped = settings.model_copy(update={"training_cpus": 2.0, "training_cpus_per_worker": 0.5})
    with database.session() as session:
        admitted = admit_jobs(session, capped)  # files checked, queued, admitted in one tick
    assert admitted == ids[:2]  # 2 workers x 0.5 CPU each: two jobs fill 2 CPUs, oldest first
    statuses = [
        client.get(f"/v1/fine_tuning/jobs/{i}", headers=tenant.headers).json()["status"]
        for i in ids
    ]
    assert statuses == ["running", "running", "queued"]
    with database.session() as session:
        assert admit_jobs(session, capped) == []


def test_scheduler_tick_takes_capacity_from_the_cluster_when_unset(
    client, database, settings, catalog
):
    tenant = make_tenant(database, max_concurrent_jobs=5)
    file_id = _file(client, tenant)
    ids = [_job(client, tenant, file_id, num_workers=2).json()["id"] for _ in range(3)]
    unset = settings.model_copy(
        update={"training_cpus": None, "training_gpus": None, "training_cpus_per_worker": 0.5}
    )
    with database.session() as session:
        assert admit_jobs(session, unset) == []  # the cluster could not be asked: wait
    with database.session() as session:
        assert admit_jobs(session, unset, Resources(cpus=1.0)) == ids[:1]  # 1 CPU: one job
    with database.session() as session:
        assert (
            admit_jobs(session, unset, Resources(cpus=3.0)) == ids[1:]
        )  # nodes joined: room for both


def test_racing_ticks_admit_each_job_once(client, database, settings, catalog):
    tenant = make_tenant(database, max_concurrent_jobs=10)
    file_id = _file(client, tenant)
    ids = {_job(client, tenant, file_id).json()["id"] for _ in range(6)}
    big = settings.model_copy(update={"training_cpus": 64.0})

    def tick(_: int) -> list[str]:
        with database.session() as session:
            return admit_jobs(session, big)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(tick, range(4)))
    admitted = [job_id for r in results for job_id in r]
    assert sorted(admitted) == sorted(ids)  # every job exactly once
