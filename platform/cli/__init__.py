"""The ``moeplane`` command. Commands build what they need when they run, not at import."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from moeplane.cli import client, demo, services, serving
from moeplane.cli.eval import eval_app
from moeplane.config import Settings, get_settings

app = typer.Typer(no_args_is_help=True, help="moeplane: fine-tune and serve MoE models per tenant.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
admin_app = typer.Typer(no_args_is_help=True, help="Operator tasks straight on the database.")
models_app = typer.Typer(no_args_is_help=True, help="The model registry (operator).")
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")
app.add_typer(models_app, name="models")
app.add_typer(client.files_app, name="files")
app.add_typer(client.jobs_app, name="jobs")
app.add_typer(serving.deploy_app, name="deploy")
app.add_typer(eval_app, name="eval")
app.command("chat")(serving.chat)
app.command("demo")(demo.demo)
app.command()(services.worker)
app.command()(services.beat)
app.command()(services.api)

VERSION = "0.1.0"


def _settings() -> Settings:
    try:
        return get_settings()
    except ValueError as exc:  # pydantic's ValidationError names the variable at fault
        typer.secho(f"Invalid settings: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc


@app.command()
def version() -> None:
    """Print the moeplane version."""
    typer.echo(f"moeplane {VERSION}")


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Option(help="Target revision")] = "heads") -> None:
    """Apply database migrations (safe to run repeatedly, and before every rollout)."""
    from moeplane.store.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url, revision)
    typer.echo(f"database at {_safe_url(settings.database_url)} is at revision {revision}")


@admin_app.command("create-tenant")
def create_tenant(
    name: Annotated[str, typer.Argument(help="Unique tenant name")],
    weight: Annotated[float, typer.Option(help="Fair-share weight")] = 1.0,
) -> None:
    """Create a tenant with the default quota and print its id."""
    from moeplane.errors import DomainError
    from moeplane.store.audit import SYSTEM, audit
    from moeplane.store.db import Database
    from moeplane.store.tenants import create_tenant as create

    db = Database(_settings().database_url)
    try:
        with db.session() as session:
            tenant = create(session, name=name, weight=weight)
            audit(session, SYSTEM, "tenant.create", tenant_id=tenant.id, target_id=tenant.id)
    except DomainError as exc:
        typer.secho(f"error: {exc.message}", fg="red", err=True)
        raise typer.Exit(1) from exc
    finally:
        db.dispose()
    typer.echo(tenant.id)


@admin_app.command("create-key")
def create_key(
    tenant: Annotated[str | None, typer.Argument(help="Tenant id or name")] = None,
    name: Annotated[str, typer.Option(help="A label for the key")] = "",
    admin: Annotated[bool, typer.Option("--admin", help="Create an operator key")] = False,
) -> None:
    """Create an API key for a tenant (or, with --admin, for an operator); print it once."""
    from sqlalchemy import or_, select

    from moeplane.store.audit import SYSTEM, audit
    from moeplane.store.db import Database
    from moeplane.store.keys import issue_key
    from moeplane.store.models import Tenant

    if admin == (tenant is not None):
        typer.secho("give a TENANT, or --admin for an operator key", fg="red", err=True)
        raise typer.Exit(2)
    db = Database(_settings().database_url)
    try:
        with db.session() as session:
            tenant_id = None
            if tenant is not None:
                row = session.scalars(
                    select(Tenant).where(
                        or_(Tenant.id == tenant, Tenant.name == tenant), Tenant.status != "deleted"
                    )
                ).first()
                if row is None:
                    typer.secho(f"error: no tenant '{tenant}'", fg="red", err=True)
                    raise typer.Exit(1)
                tenant_id = row.id
            role = "admin" if admin else "tenant"
            issued = issue_key(session, tenant_id=tenant_id, role=role, name=name)
            audit(session, SYSTEM, "key.create", tenant_id=tenant_id, target_id=issued.record.id)
    finally:
        db.dispose()
    typer.echo(issued.secret)


@models_app.command("seed")
def models_seed() -> None:
    """Register the base catalog models (qwen3-moe-tiny, qwen3-tiny) if they are missing."""
    from moeplane.modeling.publish import seed_base_models
    from moeplane.storage import Storage
    from moeplane.store.db import Database

    settings = _settings()
    db = Database(settings.database_url)
    try:
        with db.session() as session:
            added = seed_base_models(
                session,
                Storage(settings.storage_uri),
                tokenizer_cache=settings.home / "cache" / "tokenizer",
                progress=typer.echo,
            )
    finally:
        db.dispose()
    typer.echo(f"added: {', '.join(added)}" if added else "the catalog is complete")


@models_app.command("import")
def models_import(
    path: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="HF checkpoint dir")],
    name: Annotated[str, typer.Option(help="Model id tenants will use")],
) -> None:
    """Register a local Hugging Face checkpoint (Qwen3 / Qwen3-MoE) as a base model version."""
    from moeplane.errors import DomainError
    from moeplane.modeling.publish import import_checkpoint
    from moeplane.storage import Storage
    from moeplane.store.db import Database

    settings = _settings()
    db = Database(settings.database_url)
    try:
        with db.session() as session:
            version = import_checkpoint(session, Storage(settings.storage_uri), path, name=name)
            typer.echo(f"{name} version {version.version}: {version.artifact_uri}")
            typer.echo(json.dumps(version.config, indent=2))
    except DomainError as exc:
        typer.secho(f"error: {exc.message}", fg="red", err=True)
        raise typer.Exit(1) from exc
    finally:
        db.dispose()


@app.command()
def up(
    host: Annotated[str | None, typer.Option(help="Bind address")] = None,
    port: Annotated[int | None, typer.Option(help="Port")] = None,
) -> None:
    """Migrate, then start the API and every piece the settings do not point elsewhere.

    Prints the URLs and the admin key (when it generated one), and stops everything on Ctrl-C.
    """
    from moeplane.runtime import Platform

    def _terminate(signum, frame):  # SIGTERM (docker stop, systemd) stops like Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    settings = _settings()
    platform = Platform(settings, host=host or settings.api_host, port=port or settings.api_port)
    try:
        platform.start(echo=typer.echo)
        platform.wait()
    except KeyboardInterrupt:
        typer.echo("\nstopping ...")
    finally:
        platform.stop()
        typer.echo("stopped")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
