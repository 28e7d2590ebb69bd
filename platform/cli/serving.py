"""Serving commands over the REST API: ``moeplane deploy ...`` and ``moeplane chat MODEL``."""

from __future__ import annotations

import json
import time
from typing import Annotated

import httpx
import typer

from moeplane.cli.client import _check, _client, _print

deploy_app = typer.Typer(no_args_is_help=True, help="Model deployments (Ray Serve).")


@deploy_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Deployment name (a-z, 0-9, -)")],
    model: Annotated[str, typer.Option(help="A model id from /v1/models")],
    version: Annotated[int | None, typer.Option(help="Model version (default: latest)")] = None,
    expert_shards: Annotated[int, typer.Option(help="Expert shards per replica")] = 1,
    min_replicas: Annotated[int, typer.Option(help="Autoscaling floor")] = 1,
    max_replicas: Annotated[int, typer.Option(help="Autoscaling ceiling")] = 1,
    policy: Annotated[str, typer.Option(help="ongoing_requests | tokens")] = "ongoing_requests",
    cpus_per_shard: Annotated[float, typer.Option(help="CPUs per shard")] = 0.5,
    packed_weights: Annotated[
        str, typer.Option(help="auto | on | off: packed copies of the expert weights (memory)")
    ] = "auto",
    max_batch_size: Annotated[int, typer.Option(help="Sequences per replica batch")] = 8,
    wait: Annotated[bool, typer.Option(help="Wait until it is running")] = False,
) -> None:
    """Create a deployment and print its id (with --wait: follow it until it runs)."""
    body = {
        "name": name,
        "model": model,
        "expert_shards": expert_shards,
        "autoscaling": {
            "min_replicas": min_replicas,
            "max_replicas": max_replicas,
            "policy": policy,
        },
        "resources": {"cpus_per_shard": cpus_per_shard, "packed_weights": packed_weights},
        "max_batch_size": max_batch_size,
    }
    if version is not None:
        body["version"] = version
    with _client() as client:
        dep = _check(client.post("/v1/deployments", json=body))
        typer.echo(dep["id"])
        if wait:
            _wait(client, dep["id"])


def _wait(client: httpx.Client, dep_id: str, timeout_s: float = 900) -> None:
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        dep = _check(client.get(f"/v1/deployments/{dep_id}"))
        state = (dep["status"], dep["replicas"]["current"], dep["status_reason"])
        if state != last:
            reason = f" ({dep['status_reason']})" if dep["status_reason"] else ""
            typer.echo(f"{dep['status']}: {dep['replicas']['current']} replicas{reason}", err=True)
            last = state
        if dep["status"] == "running" and dep["observed_generation"] == dep["generation"]:
            return
        if dep["status"] == "failed":
            raise typer.Exit(1)
        time.sleep(2)
    typer.secho("timed out waiting for the deployment", fg="red", err=True)
    raise typer.Exit(1)


@deploy_app.command("list")
def list_deployments() -> None:
    """This tenant's deployments."""
    with _client() as client:
        for d in _check(client.get("/v1/deployments", params={"limit": 100}))["data"]:
            r = d["replicas"]
            typer.echo(
                f"{d['id']}  {d['name']:<20} {d['status']:<10} {r['current']}/{r['min']}-{r['max']}"
                f"  S={d['expert_shards']}  {d['model']}"
            )


@deploy_app.command("show")
def show(deployment_id: str) -> None:
    """One deployment as JSON, with its routing statistics."""
    with _client() as client:
        dep = _check(client.get(f"/v1/deployments/{deployment_id}"))
        dep["experts"] = _check(client.get(f"/v1/deployments/{deployment_id}/experts"))
    _print(dep)


@deploy_app.command("scale")
def scale(
    deployment_id: str,
    min_replicas: Annotated[int | None, typer.Option(help="Autoscaling floor")] = None,
    max_replicas: Annotated[int | None, typer.Option(help="Autoscaling ceiling")] = None,
    version: Annotated[int | None, typer.Option(help="Roll to this model version")] = None,
) -> None:
    """Change replica bounds (or roll to another version); prints the new generation."""
    body: dict = {}
    bounds = (("min_replicas", min_replicas), ("max_replicas", max_replicas))
    scaling = {k: v for k, v in bounds if v is not None}
    if scaling:
        body["autoscaling"] = scaling
    if version is not None:
        body["version"] = version
    with _client() as client:
        dep = _check(client.patch(f"/v1/deployments/{deployment_id}", json=body))
    typer.echo(f"generation {dep['generation']} ({dep['status']})")


@deploy_app.command("delete")
def delete(deployment_id: str) -> None:
    """Delete a deployment (its Serve application goes on the next reconcile)."""
    with _client() as client:
        typer.echo(_check(client.delete(f"/v1/deployments/{deployment_id}"))["status"])


def chat(
    model: Annotated[str, typer.Argument(help="A deployment name, or a model it serves")],
    system: Annotated[str | None, typer.Option(help="System prompt")] = None,
    max_tokens: Annotated[int, typer.Option(help="Per answer")] = 256,
    temperature: Annotated[float, typer.Option(help="0 = greedy")] = 0.7,
) -> None:
    """Chat interactively with a deployment, streaming its answers (Ctrl-D to quit)."""
    messages = [{"role": "system", "content": system}] if system else []
    with _client() as client:
        while True:
            try:
                question = input("you> ")
            except EOFError:
                typer.echo()
                return
            if not question.strip():
                continue
            messages.append({"role": "user", "content": question})
            body = {
                "model": model,
                "messages": messages,
                "max_tokens": max_tokens,
                "temperature": temperature,
                "stream": True,
            }
            answer = ""
            with client.stream("POST", "/v1/chat/completions", json=body) as response:
                if not response.is_success:
                    response.read()
                    _check(response)
                typer.echo("assistant> ", nl=False)
                for line in response.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        typer.secho(f"\nerror: {chunk['error']['message']}", fg="red", err=True)
                        break
                    for choice in chunk["choices"]:
                        text = choice["delta"].get("content") or ""
                        answer += text
                        typer.echo(text, nl=False)
            typer.echo()
            messages.append({"role": "assistant", "content": answer})
