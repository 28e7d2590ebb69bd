"""The ``moeplane`` command. Commands build what they need when they run, not at import."""

from __future__ import annotations

import signal
import sys
from typing import Annotated

import typer

from moeplane.config import Settings, get_settings

app = typer.Typer(no_args_is_help=True, help="moeplane: fine-tune and serve MoE models per tenant.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
admin_app = typer.Typer(no_args_is_help=True, help="Operator tasks straight on the database.")
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")

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
def db_upgrade(revision: Annotated[str, typer.Option(help="Target revision")] = "head") -> None:
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
