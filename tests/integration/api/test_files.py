"""Files: streamed upload with line-by-line validation, quotas, content, delete, isolation."""

from __future__ import annotations

from pathlib import Path

from tests.factories import chat_jsonl, make_tenant


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
