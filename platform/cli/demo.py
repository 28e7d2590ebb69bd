"""``moeplane demo``: the whole story on the embedded default, with progress output.

Starts the platform if it is not running, then: a tenant and its key, a generated support-chat
dataset, a fine-tune of qwen3-moe-tiny, a deployment of the new version with 2 expert shards,
a streamed chat completion from it, and the dashboard URL. A few minutes on 2 cores.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

__all__ = ["demo"]


def _step(text: str) -> None:
    typer.secho(f"\n==> {text}", fg="cyan", bold=True)


def _ok(response: httpx.Response) -> Any:
    if not response.is_success:
        typer.secho(f"error {response.status_code}: {response.text[:500]}", fg="red", err=True)
        raise typer.Exit(1)
    return response.json()


def _running(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _tenant_key(settings: Any, name: str) -> str:
    from sqlalchemy import select

    from moeplane.store.db import Database
    from moeplane.store.keys import issue_key
    from moeplane.store.models import Tenant
    from moeplane.store.tenants import create_tenant

    db = Database(settings.database_url)
    try:
        with db.session() as session:
            tenant = session.scalars(select(Tenant).where(Tenant.name == name)).first()
            if tenant is None:
                tenant = create_tenant(session, name=name, quota={"rpm": 10_000, "tpm": 1_000_000})
            issued = issue_key(session, tenant_id=tenant.id, role="tenant", name="demo")
            return issued.secret
    finally:
        db.dispose()


def _fine_tune(client: httpx.Client, data: Path, timeout_s: float) -> str:
    with data.open("rb") as handle:
        upload = _ok(
            client.post(
                "/v1/files", data={"purpose": "fine-tune"}, files={"file": (data.name, handle)}
            )
        )
    stats = upload.get("stats") or {}
    typer.echo(f"uploaded {upload['id']} ({upload['bytes']} bytes) {json.dumps(stats)[:120]}")
    job = _ok(
        client.post(
            "/v1/fine_tuning/jobs",
            json={
                "model": "qwen3-moe-tiny",
                "training_file": upload["id"],
                "method": "full",
                "suffix": "support",
                "seed": 7,
                "hyperparameters": {"n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 10},
            },
        )
    )
    typer.echo(f"job {job['id']}: {job['status']}")
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = _ok(client.get(f"/v1/fine_tuning/jobs/{job['id']}"))
        events = _ok(client.get(f"/v1/fine_tuning/jobs/{job['id']}/events", params={"limit": 100}))
        for event in reversed(events["data"]):
            if event["id"] in seen:
                continue
            seen.add(event["id"])
            data_ = event["data"]
            if "train_loss" in data_:
                typer.echo(
                    f"  step {data_['step']}/{data_.get('total_steps', '?')}  "
                    f"loss {data_['train_loss']:.3f}"
                )
            else:
                typer.echo(f"  {event['message']}")
        if job["status"] == "succeeded":
            typer.echo(f"fine-tuned model: {job['fine_tuned_model']}")
            return job["fine_tuned_model"]
        if job["status"] in ("failed", "cancelled"):
            typer.secho(f"job {job['status']}: {job.get('error')}", fg="red", err=True)
            raise typer.Exit(1)
        time.sleep(2)
    typer.secho("the fine-tune did not finish in time", fg="red", err=True)
    raise typer.Exit(1)


def _deploy(client: httpx.Client, model: str, timeout_s: float) -> dict:
    body = {
        "name": f"support-{int(time.time()) % 100000}",
        "model": model,
        "expert_shards": 2,
        "resources": {"cpus_per_shard": 0.25},
    }
    dep = _ok(client.post("/v1/deployments", json=body))
    typer.echo(f"deployment {dep['id']} ({dep['serve_application']}), 2 expert shards per replica")
    last = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        dep = _ok(client.get(f"/v1/deployments/{dep['id']}"))
        state = (dep["status"], dep["replicas"]["current"])
        if state != last:
            typer.echo(f"  {dep['status']}: {dep['replicas']['current']} replicas")
            last = state
        if dep["status"] == "running" and dep["observed_generation"] == dep["generation"]:
            return dep
        if dep["status"] == "failed":
            typer.secho(f"deployment failed: {dep['status_reason']}", fg="red", err=True)
            raise typer.Exit(1)
        time.sleep(1)
    typer.secho("the deployment did not start in time", fg="red", err=True)
    raise typer.Exit(1)


def _chat(client: httpx.Client, deployment: str, question: str) -> dict:
    body = {
        "model": deployment,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 32,
        "temperature": 0.7,
        "seed": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    typer.echo(f"you> {question}")
    typer.echo("assistant> ", nl=False)
    usage: dict = {}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if not response.is_success:
            response.read()
            _ok(response)
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                typer.secho(f"\nerror: {chunk['error']['message']}", fg="red", err=True)
                raise typer.Exit(1)
            usage = chunk.get("usage") or usage
            for choice in chunk["choices"]:
                typer.echo(choice["delta"].get("content") or "", nl=False)
    typer.echo()
    return usage


def demo(
    keep_running: Annotated[
        bool, typer.Option(help="Leave the platform running if the demo started it")
    ] = False,
    timeout_s: Annotated[float, typer.Option(help="Per stage")] = 900,
) -> None:
    """Walk the whole story: tenant, dataset, fine-tune, expert-sharded deployment, chat."""
    from moeplane.cli import _settings
    from moeplane.jobs.finetune import support_chat_dataset, write_jsonl
    from moeplane.runtime import Platform

    settings = _settings()
    url = settings.api_url.rstrip("/")
    platform = None
    if _running(url):
        _step(f"platform already running at {url}")
    else:
        _step("starting the platform (embedded: SQLite, local broker, local Ray)")
        platform = Platform(settings, host=settings.api_host, port=settings.api_port)
        platform.start(echo=typer.echo)
        url = platform.url
    try:
        _step("creating tenant 'demo-shop' and an API key")
        key = _tenant_key(settings, "demo-shop")
        typer.echo(f"tenant key: {key}")
        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120)
        with client, tempfile.TemporaryDirectory(prefix="moeplane-demo-") as tmp:
            _step("generating a support-chat dataset (64 conversations)")
            data = write_jsonl(support_chat_dataset(64, seed=1), Path(tmp) / "support.jsonl")
            _step("fine-tuning qwen3-moe-tiny on Ray Train")
            model = _fine_tune(client, data, timeout_s)
            _step(f"deploying {model} with 2 expert shards per replica")
            dep = _deploy(client, model, timeout_s)
            _step("streaming a chat completion from the fine-tuned, expert-sharded deployment")
            usage = _chat(client, dep["name"], "Where is my order?")
            typer.echo(f"usage: {json.dumps(usage)}")
        _step("done")
        typer.echo(f"dashboard: {url}/admin  (log in with an admin key)")
        typer.echo(f"API docs:  {url}/docs")
        if platform is not None and keep_running:
            typer.echo("the platform keeps running; Ctrl-C stops it")
            platform.wait()
    except KeyboardInterrupt:
        typer.echo("\nstopping ...")
    finally:
        if platform is not None:
            platform.stop()
