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
