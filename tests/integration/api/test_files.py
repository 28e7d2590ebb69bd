"""Files: streamed upload with line-by-line validation, quotas, content, delete, isolation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from moeplane.store.models import File
from tests.factories import chat_jsonl, make_tenant
from tests.unit.support.kb import HELP_CENTER_MD, faq_jsonl

PRODUCT = {"id": "p1", "title": "Mug", "description": "Blue", "category": "Kitchen", "price": 9.5,
           "attributes": {"colour": "blue"}}  # fmt: skip
EVENT = {"user_id": "u1", "product_id": "p1", "type": "view", "timestamp": "2026-11-01T10:00:00Z"}


def _stored_files(settings) -> list[Path]:
    root = Path(settings.storage_uri.removeprefix("file://"))
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _upload(client, tenant, content: bytes, purpose="fine-tune", name="train.jsonl"):
    return client.post(
        "/v1/files",
        headers=tenant.headers,
        data={"purpose": purpose},
        files={"file": (name, content, "application/jsonl")},
    )


def test_upload_list_get_content_delete(client, database, settings):
    tenant = make_tenant(database)
    content = chat_jsonl(5)
    created = _upload(client, tenant, content)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["object"] == "file" and body["id"].startswith("file-")
    assert body["bytes"] == len(content) and body["purpose"] == "fine-tune"
    assert body["filename"] == "train.jsonl" and body["status"] == "processed"
    assert body["stats"]["examples"] == 5

    listed = client.get("/v1/files", headers=tenant.headers).json()
    assert [f["id"] for f in listed["data"]] == [body["id"]]
    assert client.get(f"/v1/files/{body['id']}", headers=tenant.headers).json() == body
    downloaded = client.get(f"/v1/files/{body['id']}/content", headers=tenant.headers)
    assert downloaded.status_code == 200 and downloaded.content == content

    deleted = client.delete(f"/v1/files/{body['id']}", headers=tenant.headers)
    assert deleted.json() == {"id": body["id"], "object": "file", "deleted": True}
    assert client.get(f"/v1/files/{body['id']}", headers=tenant.headers).status_code == 404
    assert _stored_files(settings) == []


def test_bad_line_is_reported_and_nothing_is_left(client, database, settings):
    tenant = make_tenant(database)
    lines = chat_jsonl(3).decode().splitlines()
    lines.insert(2, '{"messages": [{"role": "bot", "content": "hi"}]}')
    response = _upload(client, tenant, ("\n".join(lines) + "\n").encode())
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["message"].startswith("line 3:") and "role" in error["message"]
    assert error["param"] == "file"
    assert client.get("/v1/files", headers=tenant.headers).json()["data"] == []
    assert _stored_files(settings) == []

    not_json = _upload(client, tenant, chat_jsonl(2) + b"{oops\n")
    assert not_json.status_code == 422 and not_json.json()["error"]["message"].startswith("line 3:")


def test_purpose_and_size_limits(client, database, settings):
    tenant = make_tenant(database, max_file_bytes=2_000)
    wrong = _upload(client, tenant, chat_jsonl(2), purpose="homework")
    assert wrong.status_code == 422 and wrong.json()["error"]["param"] == "purpose"
    big = _upload(client, tenant, chat_jsonl(200))
    assert big.status_code == 413
    assert "2000" in big.json()["error"]["message"]
    assert client.get("/v1/files", headers=tenant.headers).json()["data"] == []
    assert _stored_files(settings) == []


def test_storage_quota(client, database):
    content = chat_jsonl(4)
    tenant = make_tenant(database, storage_bytes=len(content) + 10)
    assert _upload(client, tenant, content).status_code == 201
    second = _upload(client, tenant, content)
    assert second.status_code == 429 and second.json()["error"]["type"] == "quota_exceeded_error"
    assert len(client.get("/v1/files", headers=tenant.headers).json()["data"]) == 1


def test_files_are_isolated(client, database):
    a, b = make_tenant(database), make_tenant(database)
    theirs = _upload(client, b, chat_jsonl(2)).json()["id"]
    for method, path in (
        ("GET", f"/v1/files/{theirs}"),
        ("GET", f"/v1/files/{theirs}/content"),
        ("DELETE", f"/v1/files/{theirs}"),
    ):
        response = client.request(method, path, headers=a.headers)
        assert response.status_code == 404, (method, path)
    assert client.get("/v1/files", headers=a.headers).json()["data"] == []
    assert client.get(f"/v1/files/{theirs}", headers=b.headers).status_code == 200


def _jsonl(*rows) -> bytes:
    return b"".join((r if isinstance(r, str) else json.dumps(r)).encode() + b"\n" for r in rows)


def _rows(database) -> int:
    with database.session() as session:
        return session.scalar(select(func.count()).select_from(File))


GOOD_UPLOADS = [
    ("catalog", "products.jsonl", _jsonl(PRODUCT, PRODUCT | {"id": "p2"}), {"products": 2}),
    ("events", "events.jsonl", _jsonl(EVENT, "", EVENT | {"type": "purchase"}), {"events": 2}),
    ("knowledge", "help.md", HELP_CENTER_MD.encode(), {"format": "markdown"}),
    ("knowledge", "faq.jsonl", faq_jsonl(), {"format": "faq"}),
]


@pytest.mark.parametrize(("purpose", "name", "content", "stats"), GOOD_UPLOADS)
def test_good_uploads_of_every_purpose(client, database, purpose, name, content, stats):
    tenant = make_tenant(database)
    created = _upload(client, tenant, content, purpose=purpose, name=name)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["purpose"] == purpose and body["bytes"] == len(content)
    assert body["stats"].items() >= stats.items() and body["stats"]["lines"] >= 1
    downloaded = client.get(f"/v1/files/{body['id']}/content", headers=tenant.headers)
    assert downloaded.content == content


# (purpose, file name, content, the error message starts with, and names)
BAD_UPLOADS = [
    ("catalog", "p.jsonl", _jsonl(PRODUCT, PRODUCT | {"id": "p2", "price": "cheap"}),
     "line 2: price must be a number", "price"),
    ("catalog", "p.jsonl", _jsonl(PRODUCT, "", PRODUCT), "line 3: id 'p1' repeats line 1", "id"),
    ("catalog", "p.jsonl", _jsonl(PRODUCT, "{oops"), "line 2: not valid JSON", "JSON"),
    ("catalog", "p.jsonl", b"\n", "the catalog file has no products", "products"),
    ("events", "e.jsonl", _jsonl(EVENT, EVENT, EVENT | {"type": "like"}),
     "line 3: type must be one of view, cart, purchase", "like"),
    ("events", "e.jsonl", _jsonl(EVENT | {"timestamp": "yesterday"}), "line 1: timestamp", "ISO"),
    ("knowledge", "faq.jsonl", b'{"question": "q", "answer": "a"}\n{oops\n',
     "line 2: not valid JSON", "JSON"),
    ("knowledge", "faq.jsonl", _jsonl({"question": "q", "answer": " "}), "line 1: 'answer'",
     "non-empty"),
    ("knowledge", "kb.md", b"# Title\n\n## Empty section\n", "kb.md holds no passages", "no"),
    ("knowledge", "kb.md", "# Café\n".encode("latin-1"), "line 1: not valid UTF-8", "UTF-8"),
    ("knowledge", "manual.pdf", b"%PDF-1.7", "manual.pdf: knowledge files are Markdown", ".md"),
]  # fmt: skip


@pytest.mark.parametrize(("purpose", "name", "content", "starts", "names"), BAD_UPLOADS)
def test_bad_uploads_of_every_purpose_name_the_line_and_leave_nothing(
    client, database, settings, purpose, name, content, starts, names
):
    tenant = make_tenant(database)
    response = _upload(client, tenant, content, purpose=purpose, name=name)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["message"].startswith(starts) and names in error["message"], error
    assert (error["param"], error["code"], error["type"]) == (
        "file",
        "invalid_file",
        "invalid_request_error",
    )
    assert _rows(database) == 0
    assert client.get("/v1/files", headers=tenant.headers).json()["data"] == []
    assert _stored_files(settings) == []


def test_a_bad_line_deep_in_a_big_upload_stops_it(client, database, settings):
    tenant = make_tenant(database)
    rows = [PRODUCT | {"id": f"p{i}", "description": "x" * 200} for i in range(20_000)]
    rows[15_000] = rows[15_000] | {"in_stock": "yes"}
    response = _upload(client, tenant, _jsonl(*rows), purpose="catalog", name="p.jsonl")
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("line 15001: in_stock")
    assert _rows(database) == 0 and _stored_files(settings) == []
