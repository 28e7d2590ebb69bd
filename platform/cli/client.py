"""Tenant commands that talk to the REST API (``MOEPLANE_API_URL``, ``MOEPLANE_API_KEY``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

files_app = typer.Typer(no_args_is_help=True, help="Upload and list files.")
jobs_app = typer.Typer(no_args_is_help=True, help="Fine-tuning jobs.")

FINAL = ("succeeded", "failed", "cancelled")


def _client() -> httpx.Client:
    from moeplane.cli import _settings

    settings = _settings()
    if settings.api_key is None:
        typer.secho("set MOEPLANE_API_KEY to a tenant key", fg="red", err=True)
        raise typer.Exit(2)
    return httpx.Client(
        base_url=settings.api_url,
        headers={"Authorization": f"Bearer {settings.api_key.get_secret_value()}"},
        timeout=60,
    )


def _check(response: httpx.Response) -> Any:
    if response.is_success:
        return response.json()
    try:
        error = response.json()["error"]
        where = f" ({error['param']})" if error.get("param") else ""
        message = f"{response.status_code} {error['type']}{where}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        message = f"{response.status_code}: {response.text[:500]}"
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(1)


def _print(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2))


@files_app.command("upload")
def upload(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The file")],
    purpose: Annotated[
        str, typer.Option(help="fine-tune | knowledge | catalog | events")
    ] = "fine-tune",
) -> None:
    """Upload a file (JSONL for fine-tune: validated line by line) and print its id."""
    with _client() as client, path.open("rb") as handle:
        result = _check(
            client.post("/v1/files", data={"purpose": purpose}, files={"file": (path.name, handle)})
        )
    typer.echo(result["id"])


@files_app.command("list")
def list_files() -> None:
    """List this tenant's files."""
    with _client() as client:
        for f in _check(client.get("/v1/files", params={"limit": 100}))["data"]:
            typer.echo(f"{f['id']}  {f['purpose']:<10} {f['bytes']:>10}  {f['filename']}")


@jobs_app.command("create")
def create(
    model: Annotated[str, typer.Option(help="Base or fine-tuned model id")],
    training_file: Annotated[str, typer.Option(help="file-... (purpose fine-tune)")],
    method: Annotated[str, typer.Option(help="lora | full")] = "lora",
    epochs: Annotated[int | None, typer.Option(help="n_epochs")] = None,
    batch_size: Annotated[int | None, typer.Option(help="batch_size")] = None,
    lr_multiplier: Annotated[float | None, typer.Option(help="learning_rate_multiplier")] = None,
    suffix: Annotated[str | None, typer.Option(help="Added to the model name")] = None,
    workers: Annotated[int, typer.Option(help="Data-parallel workers")] = 1,
    seed: Annotated[int | None, typer.Option(help="Random seed")] = None,
) -> None:
    """Create a fine-tuning job and print its id."""
    hyper = {
        k: v
        for k, v in (
            ("n_epochs", epochs),
            ("batch_size", batch_size),
            ("learning_rate_multiplier", lr_multiplier),
        )
        if v is not None
    }
    body = {
        "model": model,
        "training_file": training_file,
        "method": method,
        "hyperparameters": hyper,
        "num_workers": workers,
    }
    if suffix:
        body["suffix"] = suffix
    if seed is not None:
        body["seed"] = seed
    with _client() as client:
        typer.echo(_check(client.post("/v1/fine_tuning/jobs", json=body))["id"])


@jobs_app.command("list")
def list_jobs(status: Annotated[str | None, typer.Option(help="Filter")] = None) -> None:
    """List this tenant's jobs, newest first."""
    params = {"limit": 100} | ({"status": status} if status else {})
    with _client() as client:
        for job in _check(client.get("/v1/fine_tuning/jobs", params=params))["data"]:
            typer.echo(
                f"{job['id']}  {job['status']:<17} {job['model']:<20} "
                f"{job['fine_tuned_model'] or ''}"
            )


@jobs_app.command("show")
def show(job_id: str) -> None:
    """Show one job as JSON."""
    with _client() as client:
        _print(_check(client.get(f"/v1/fine_tuning/jobs/{job_id}")))


@jobs_app.command("cancel")
def cancel(job_id: str) -> None:
    """Cancel a queued or running job."""
    with _client() as client:
        typer.echo(_check(client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel"))["status"])


@jobs_app.command("follow")
def follow(
    job_id: str,
    interval: Annotated[float, typer.Option(help="Seconds between polls")] = 1.0,
) -> None:
    """Follow a job live: a progress bar with step, loss and ETA, then the result."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    seen: set[str] = set()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("step {task.fields[step]}"),
        TextColumn("loss {task.fields[loss]}"),
        TimeRemainingColumn(),
    )
    with _client() as client, Progress(*columns) as progress:
        bar = progress.add_task("queued", total=None, loss="-", step="-")
        while True:
            job = _check(client.get(f"/v1/fine_tuning/jobs/{job_id}"))
            events = _check(
                client.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 100})
            )["data"]
            for event in reversed(events):
                if event["id"] in seen:
                    continue
                seen.add(event["id"])
                data = event["data"]
                if event["type"] == "metrics" and "step" in data:
                    total = data.get("total_steps")
                    progress.update(
                        bar,
                        completed=data["step"],
                        total=total,
                        step=f"{data['step']}/{total}" if total else str(data["step"]),
                        loss=f"{data.get('train_loss', float('nan')):.4f}",
                    )
                else:
                    progress.console.print(f"[dim]{event['message']}[/dim]")
            progress.update(bar, description=job["status"])
            if job["status"] in FINAL:
                break
            time.sleep(interval)
    if job["status"] == "succeeded":
        typer.echo(f"fine-tuned model: {job['fine_tuned_model']}")
    else:
        typer.secho(
            f"job {job['status']}: {(job.get('error') or {}).get('message', '')}",
            fg="red",
            err=True,
        )
        raise typer.Exit(1)
