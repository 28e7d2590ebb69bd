"""Metering at the engine: the replica that generated the tokens records them.

A gateway that meters only finished, non-streamed responses undercounts: a client that
disconnects mid-stream still cost every token generated before the replica noticed. Here the
engine's finish hook (called once per request, whatever ended it) writes one
``inference_requests`` row and adds to the tenant's usage counters, in one transaction keyed
by the gateway's request id, so a retried write cannot bill twice.
"""

from __future__ import annotations

from typing import Any

from moeplane.store.db import Database
from moeplane.store.models import ExpertStats, InferenceRequest
from moeplane.store.usage import record_usage

__all__ = ["Meter"]


class Meter:
    def __init__(self, database_url: str, deployment_id: str, model: str, version_id: str):
        self.db = Database(database_url)
        self.deployment_id = deployment_id
        self.model = model
        self.version_id = version_id

    def record(
        self,
        *,
        request_id: str,
        tenant_id: str,
        prompt_tokens: int,
        completion_tokens: int,
        finish_reason: str,
        latency_ms: float,
    ) -> bool:
        """Bill one request; False if it was billed already."""
        with self.db.session() as session:
            if session.get(InferenceRequest, request_id) is not None:
                return False
            session.add(
                InferenceRequest(
                    id=request_id,
                    tenant_id=tenant_id,
                    deployment_id=self.deployment_id,
                    model=self.model,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    finish_reason=finish_reason,
                    latency_ms=latency_ms,
                )
            )
            record_usage(session, tenant_id, "prompt_tokens", prompt_tokens)
            record_usage(session, tenant_id, "completion_tokens", completion_tokens)
        return True

    def save_expert_counts(
        self,
        replica_id: str,
        counts: list[list[int]],
        tokens: int,
        shards: list[dict[str, Any]] | None = None,
    ) -> None:
        """Overwrite this replica's cumulative routing counts (idempotent); ``tokens`` is how
        many tokens went through the MoE layers."""
        with self.db.session() as session:
            row = session.get(ExpertStats, (self.deployment_id, replica_id))
            if row is None:
                row = ExpertStats(deployment_id=self.deployment_id, replica_id=replica_id)
                session.add(row)
            row.model_version_id = self.version_id
            row.counts = counts
            row.tokens = tokens
            row.shards = list(shards or [])

    def close(self) -> None:
        self.db.dispose()
