"""``moeplane eval ...``: offline quality checks of the application endpoints, through the API."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from moeplane.cli.client import _check, _client

eval_app = typer.Typer(no_args_is_help=True, help="Evaluate applications on labelled data.")


@eval_app.command("support")
def support(
    bot: Annotated[str, typer.Argument(help="The bot's id (bot-...)")],
    questions: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="JSONL: question, passage, escalate")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON")] = False,
) -> None:
    """Retrieval hit@1 / hit@3 and escalation precision / recall of a support bot.

    Each line is {"question": ..., "passage": <ref, title or passage id> | null,
    "escalate": bool (default: passage is null)}. Uses the bot's search endpoint: no model
    calls, no tokens billed.
    """
    from moeplane.errors import InvalidRequest
    from moeplane.support import parse_questions, score

    try:
        labelled = parse_questions(questions.read_text())
    except InvalidRequest as exc:
        typer.secho(f"error: {questions}: {exc.message}", fg="red", err=True)
        raise typer.Exit(2) from exc
    results = []
    with _client() as client, typer.progressbar(labelled, label="asking", file=sys.stderr) as items:
        for item in items:
            response = client.post(f"/v1/support/bots/{bot}/search", json={"query": item.question})
            found = _check(response)
            results.append({"passages": found["passages"], "escalate": found["escalate"]})
    metrics = score(labelled, results)
    if as_json:
        typer.echo(json.dumps(metrics.to_dict(), indent=2))
        return
    typer.echo(f"questions            {metrics.questions} ({metrics.answerable} answerable)")
    typer.echo(f"hit@1                {metrics.hit_at_1:.3f}")
    typer.echo(f"hit@3                {metrics.hit_at_3:.3f}")
    typer.echo(
        f"escalation precision {metrics.escalation_precision:.3f}   "
        f"recall {metrics.escalation_recall:.3f}   "
        f"({metrics.escalated} escalated, {metrics.should_escalate} should)"
    )


@eval_app.command("recommendations")
def recommendations(
    catalog: Annotated[
        str, typer.Argument(help="A catalog id (cat-...), or 'demo' for generated data")
    ],
    k: Annotated[int, typer.Option(min=1, max=100, help="Cut-off of recall and NDCG")] = 10,
    max_users: Annotated[int, typer.Option(min=1, help="Held-out users evaluated")] = 2000,
    products: Annotated[int, typer.Option(min=20, help="With 'demo': products")] = 1000,
    users: Annotated[int, typer.Option(min=1, help="With 'demo': users")] = 800,
    seed: Annotated[int, typer.Option(help="With 'demo': generator seed")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON")] = False,
) -> None:
    """Leave-last-out recall@k and NDCG@k: the hybrid recommender against a popularity and an
    embedding-only baseline. Reads the catalog's products and events from the database
    (operator command: MOEPLANE_DATABASE_URL) and its stored index's embeddings."""
    from moeplane.recommend.evaluate import evaluate

    if catalog == "demo":
        from moeplane.modeling.embeddings import EmbeddingModel
        from moeplane.recommend.generator import generate

        data = generate(products, users, seed=seed)
        items, events = data.products, data.events
        typer.echo(f"embedding {len(items)} generated products ...", err=True)
        embeddings = EmbeddingModel().encode([p.text() for p in items], batch_size=128)
    else:
        items, events, embeddings = _stored_catalog(catalog)
    metrics = evaluate(items, events, embeddings, k=k, max_users=max_users)
    if as_json:
        typer.echo(json.dumps([m.__dict__ for m in metrics], indent=2))
        return
    users_n = metrics[0].users if metrics else 0
    typer.echo(f"{len(items)} products, {len(events)} events, {users_n} held-out users")
    typer.echo(f"{'strategy':<12} {f'recall@{k}':>10} {f'ndcg@{k}':>10}")
    for m in metrics:
        typer.echo(f"{m.strategy:<12} {m.recall:>10.3f} {m.ndcg:>10.3f}")


def _stored_catalog(catalog_id: str):
    """Products, events and the index's embeddings of a catalog, straight from the database."""
    from moeplane.config import get_settings
    from moeplane.recommend.catalogs import load_catalog_records
    from moeplane.recommend.engine import load_index_uri
    from moeplane.store.db import Database
    from moeplane.store.models import Catalog

    db = Database(get_settings().database_url)
    try:
        with db.session() as session:
            row = session.get(Catalog, catalog_id)
            if row is None or row.index_uri is None:
                why = "no such catalog" if row is None else "its index is not built yet"
                typer.secho(f"error: {catalog_id}: {why}", fg="red", err=True)
                raise typer.Exit(1)
            uri = row.index_uri
        items, events = load_catalog_records(db, catalog_id)
    finally:
        db.dispose()
    index = load_index_uri(uri)
    position = {pid: i for i, pid in enumerate(index.product_ids)}
    keep = [p for p in items if p.id in position]
    return keep, events, index.embeddings[[position[p.id] for p in keep]]
