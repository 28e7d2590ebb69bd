"""Product recommendations: demo data, the per-catalog index, hybrid scoring and evaluation.

The pure parts live here (no database, no Ray): `generator` (a demo catalog and event log),
`records` (parsing uploads), `index` (embeddings, co-occurrence, popularity; stored as files),
`scoring` (the hybrid ranking every caller uses: the Serve replica, the evaluation, the tests)
and `evaluate` (leave-last-out metrics). `catalogs` is the domain layer over the database and
`tasks` the Celery index build; `moeplane.serving.recommend` serves an index.
"""

from moeplane.recommend.index import IndexConfig, RecIndex, build_index, load_index, save_index
from moeplane.recommend.records import EventRecord, ProductRecord
from moeplane.recommend.scoring import Filters, Query, Recommendation, Weights, recommend

__all__ = [
    "EventRecord",
    "Filters",
    "IndexConfig",
    "ProductRecord",
    "Query",
    "RecIndex",
    "Recommendation",
    "Weights",
    "build_index",
    "load_index",
    "recommend",
    "save_index",
]
