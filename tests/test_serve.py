"""The server through FastAPI's test client, with the hash embedder, a scripted LLM and jobs run in-process."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from rag.answer.extractive import ExtractiveGenerator  # noqa: E402
from rag.serve.app import create_app  # noqa: E402
from rag.serve.db import ServerDB  # noqa: E402
from rag.serve.keys import create_key  # noqa: E402
from rag.serve.settings import ServeSettings  # noqa: E402
from rag.serve.worker import run_job  # noqa: E402
from tests.conftest import CORPUS, HashEmbedder  # noqa: E402


class ScriptedLLM(ExtractiveGenerator):
    """Extractive answers, but a question rewrite is recorded and answered with a fixed standalone question."""

    def __init__(self) -> None:
        self.rewrites: list[str] = []

    def stream(self, messages, max_new_tokens=512):
        prompt = messages[-1]["content"]
        if "Context passages:" not in prompt:
            self.rewrites.append(prompt)
            yield "How can the compressor warranty be extended?"
            return
        yield from super().stream(messages, max_new_tokens)


def make_app(root: Path, llm=None, **settings):
    emb = HashEmbedder()
    return create_app(
        ServeSettings(root=root, **settings),
        generator=llm or ScriptedLLM(),
        embedder_factory=lambda name: emb,
        runner=lambda spec, emit: run_job(spec, emit, embedder=emb),
        warm=False,
        on_stuck=lambda: None,
    )


@pytest.fixture
def client(tmp_path):
    with TestClient(make_app(tmp_path / "root")) as c:
        yield c


def wait_job(client, job_id: str, headers=None) -> dict:
    for _ in range(200):
        job = client.get(f"/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("committed", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def upload(client, collection: str, files: list[tuple[str, bytes]], headers=None):
    return client.post(
        f"/collections/{collection}/documents",
        headers=headers,
        files=[("files", (name, data, "application/octet-stream")) for name, data in files],
    )


def corpus_files() -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in sorted(CORPUS.iterdir()) if p.is_file()]


@pytest.fixture
def loaded(client):
    assert client.post("/collections", json={"name": "manuals"}).status_code == 201
    r = upload(client, "manuals", corpus_files())
    assert r.status_code == 202 and r.headers["location"] == f"/jobs/{r.json()['id']}"
    job = wait_job(client, r.json()["id"])
    assert job["status"] == "committed", job
    return client


def test_upload_runs_as_a_job_and_its_files_are_searchable(loaded):
    docs = loaded.get("/collections/manuals/documents").json()["documents"]
    assert len(docs) == len(corpus_files()) and all(d["chunks"] > 0 for d in docs)
    info = loaded.get("/collections").json()["collections"][0]
    assert (
        info["name"] == "manuals"
        and info["documents"] == len(docs)
        and info["chunks"] == sum(d["chunks"] for d in docs)
    )
    r = loaded.post("/collections/manuals/search", json={"query": "air filter cleaning", "k": 3}).json()
    assert len(r["hits"]) == 3 and {"embed", "dense", "bm25", "fuse"} <= set(r["timings_ms"])
    assert all(h["source"].endswith(tuple(d["name"] for d in docs)) for h in r["hits"])
    again = wait_job(loaded, upload(loaded, "manuals", corpus_files()[:1]).json()["id"])
    assert [f["status"] for f in again["files"]] == ["unchanged"]
    name, data = corpus_files()[0]
    twin = wait_job(loaded, upload(loaded, "manuals", [("copy-" + name, data)]).json()["id"])
    assert twin["files"][0]["status"] == "unchanged" and "same content" in twin["files"][0]["reason"]


def test_a_corrupt_pdf_fails_with_its_reason_while_the_other_files_commit(client):
    client.post("/collections", json={"name": "c"})
    job = wait_job(
        client,
        upload(
            client,
            "c",
            [("broken.pdf", b"%PDF-1.4 this is not a pdf"), ("ok.md", b"# Pump\n\nThe pump runs quietly at night.")],
        ).json()["id"],
    )
    by_name = {f["name"]: f for f in job["files"]}
    assert by_name["broken.pdf"]["status"] == "failed" and by_name["broken.pdf"]["reason"]
    assert by_name["ok.md"]["status"] == "committed"
    assert [d["name"] for d in client.get("/collections/c/documents").json()["documents"]] == ["ok.md"]


def test_files_are_reported_committed_once_searchable_and_same_bytes_are_indexed_once(client, tmp_path):
    from indexes.store import Store

    client.post("/collections", json={"name": "c"})
    store = client.app.state.services.collections.path("c")
    seen: list[tuple[str, str, bool]] = []
    services = client.app.state.services
    emb = services.collections.embedder("test-hash")

    def runner(spec, emit):
        def watch(event):
            if event["stage"] == "committed":  # what the page shows as done must already be searchable
                reader = Store.open(store, read_only=True)
                seen.append(
                    (
                        Path(event["source"]).name,
                        event["reason"],
                        reader.lexical_ready and event["source"] in reader.documents(),
                    )
                )
            emit(event)

        return run_job(spec, watch, embedder=emb)

    services.jobs.runner = runner
    same = b"# Pump\n\nThe pump runs quietly at night."
    job = wait_job(
        client,
        upload(client, "c", [("a.md", same), ("b.md", same), ("c.md", b"# Fan\n\nThe fan is loud.")]).json()["id"],
    )
    by_name = {f["name"]: f for f in job["files"]}
    assert by_name["a.md"]["status"] == by_name["c.md"]["status"] == "committed"
    assert by_name["b.md"]["status"] == "unchanged" and "same content as a.md" in by_name["b.md"]["reason"]
    assert sorted(seen) == [("a.md", "added", True), ("c.md", "added", True)]
    assert [d["name"] for d in client.get("/collections/c/documents").json()["documents"]] == ["a.md", "c.md"]


def test_a_job_resumed_after_a_restart_reports_the_files_it_had_committed_as_added(tmp_path):
    root = tmp_path / "root"
    with TestClient(make_app(root)) as c:
        c.post("/collections", json={"name": "m"})
        services = c.app.state.services
        job = wait_job(c, upload(c, "m", [("a.md", b"# A\n\nAlpha pumps.")]).json()["id"])
        assert job["files"][0]["status"] == "committed"
        # as if the process died after the store committed but before the job did
        services.db.set_job(job["id"], "running")
        services.db.set_file(job["id"], services.db.job(job["id"])["files"][0]["source"], "embedding", "")
    with TestClient(make_app(root)) as c:
        done = wait_job(c, job["id"])
        assert done["status"] == "committed" and done["files"][0]["status"] == "committed", done
        assert done["files"][0]["reason"] == "added before the server restarted" and "resumed" in done["note"]


def test_upload_names_never_escape_the_collection_and_limits_are_enforced(tmp_path):
    root = tmp_path / "root"
    with TestClient(make_app(root, max_upload_mb=0.001)) as c:
        c.post("/collections", json={"name": "c"})
        job = wait_job(c, upload(c, "c", [("../../evil.md", b"# Evil\n\nnot outside")]).json()["id"])
        assert job["files"][0]["status"] == "committed"
        assert not (tmp_path / "evil.md").exists() and not (root / "evil.md").exists()
        assert (root / "c" / "uploads" / "evil.md").is_file()
        # never a server path
        assert (upload(c, "c", [("/etc/passwd.md", b"x")]).json()["files"][0]["source"] == "passwd.md")
        big = upload(c, "c", [("big.md", b"x" * 5000)])
        assert big.status_code == 413 and "limit" in big.json()["error"]["message"]
        exe = upload(c, "c", [("tool.exe", b"MZ")])
        assert exe.status_code == 415 and ".pdf" in exe.json()["error"]["message"]
        assert upload(c, "c", [("..", b"x")]).status_code == 422


def test_bad_requests_get_their_status_and_a_message(client):
    assert client.get("/collections/nope").status_code == 404
    r = client.post("/collections/nope/search", json={"query": "x"})
    assert r.status_code == 404 and "no collection" in r.json()["error"]["message"]
    assert client.post("/collections", json={"name": 5, "bogus": True}).status_code == 422
    assert client.post("/collections", json={"name": "../x"}).status_code == 400
    client.post("/collections", json={"name": "c"})
    assert client.post("/collections", json={"name": "c"}).status_code == 409
    bad = client.post("/v1/chat/completions", json={"model": "c", "messages": []})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"  # as OpenAI answers
    assert (
        client.post(
            "/v1/chat/completions", json={"model": "zz", "messages": [{"role": "user", "content": "hi"}]}
        ).status_code
        == 404
    )
    assert (
        client.post(
            "/collections/c/search", content=b"{not json", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )


def test_chat_completions_keep_citations_and_rewrite_follow_ups(loaded):
    body = {"model": "manuals", "messages": [{"role": "user", "content": "Which refrigerant does the heat pump use?"}]}
    r = loaded.post("/v1/chat/completions", json=body).json()
    assert r["object"] == "chat.completion" and r["choices"][0]["message"]["role"] == "assistant"
    text = r["choices"][0]["message"]["content"]
    cited = [s for s in r["sources"] if s["cited"]]
    assert (
        "[" in text
        and cited
        and all({"source", "page", "page_end", "chunk_id", "text", "score"} <= set(s) for s in r["sources"])
    )
    assert r["usage"]["total_tokens"] == r["usage"]["prompt_tokens"] + r["usage"]["completion_tokens"] > 0
    follow = {
        "model": "manuals",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [
            *body["messages"],
            {"role": "assistant", "content": text},
            {"role": "user", "content": "and the compressor?"},
        ],
    }
    with loaded.stream("POST", "/v1/chat/completions", json=follow) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        lines = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(x) for x in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "manuals" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert any(c.get("event", {}).get("type") == "source" for c in chunks)
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    final = next(c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"] == "stop")
    assert content and final["sources"] and chunks[-1]["usage"]["completion_tokens"] > 0 and chunks[-1]["choices"] == []
    rewrite = loaded.app.state.services.collections.generator.rewrites[-1]
    assert "Which refrigerant does the heat pump use?" in rewrite and "and the compressor?" in rewrite


def test_chats_are_persisted_and_survive_a_restart(tmp_path):
    root = tmp_path / "root"
    with TestClient(make_app(root)) as c:
        c.post("/collections", json={"name": "m"})
        wait_job(c, upload(c, "m", corpus_files()).json()["id"])
        chat = c.post("/chats", json={"collection": "m"}).json()
        first = c.post(
            f"/chats/{chat['id']}/messages", json={"question": "Which refrigerant does the heat pump use?"}
        ).json()
        assert first["answered"] and first["citations"]
        with c.stream(
            "POST", f"/chats/{chat['id']}/messages", json={"question": "and the compressor?", "stream": True}
        ) as resp:
            events = [line for line in resp.iter_lines() if line.startswith("event: ")]
        assert events[0] == "event: sources" and events[-1] == "event: answer" and "event: token" in events
    with TestClient(make_app(root)) as c:
        chats = c.get("/chats").json()["chats"]
        assert [x["id"] for x in chats] == [chat["id"]] and chats[0]["title"].startswith("Which refrigerant")
        turns = c.get(f"/chats/{chat['id']}").json()["turns"]
        assert [t["question"] for t in turns] == ["Which refrigerant does the heat pump use?", "and the compressor?"]
        assert turns[1]["standalone"] == "How can the compressor warranty be extended?" and turns[0]["citations"]
        assert c.delete(f"/chats/{chat['id']}").status_code == 204 and c.get(f"/chats/{chat['id']}").status_code == 404


def test_api_keys_scopes_and_collections(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    db = ServerDB(root)
    _, admin = create_key(db, "admin", ["admin"])
    _, reader = create_key(db, "reader", ["read"], ["a"])
    db.close()
    assert "rk-" in admin and admin not in (root / ServerDB.FILE).read_bytes().decode("latin-1")  # stored hashed
    with TestClient(make_app(root)) as c:
        r = c.get("/collections")
        assert r.status_code == 401 and "API key" in r.json()["error"]["message"]
        assert c.get("/collections", headers={"Authorization": "Bearer rk-wrong"}).status_code == 401
        a = {"Authorization": f"Bearer {admin}"}
        rd = {"Authorization": f"Bearer {reader}"}
        assert c.post("/collections", json={"name": "a"}, headers=a).status_code == 201
        assert c.post("/collections", json={"name": "b"}, headers=a).status_code == 201
        r = c.post("/collections", json={"name": "x"}, headers=rd)
        assert r.status_code == 403 and "admin" in r.json()["error"]["message"]
        assert upload(c, "a", [("n.md", b"# N\n\nnotes")], headers=rd).status_code == 403
        assert c.post("/collections/b/search", json={"query": "x"}, headers=rd).status_code == 403
        assert [m["id"] for m in c.get("/v1/models", headers=rd).json()["data"]] == ["a", "all-collections"]
        assert c.get("/healthz").status_code == 200 and c.get("/metrics").status_code == 401
        assert "rag_requests_total" in c.get("/metrics", headers=rd).text


def test_a_full_llm_queue_answers_429_with_retry_after(tmp_path):
    with TestClient(make_app(tmp_path / "root", llm_queue=0)) as c:
        c.post("/collections", json={"name": "m"})
        wait_job(c, upload(c, "m", corpus_files()).json()["id"])
        gate = c.app.state.services.gate
        slot = gate.acquire()  # one generation is running and no request may wait
        try:
            r = c.post("/collections/m/ask", json={"question": "air filter?"})
            assert r.status_code == 429 and int(r.headers["retry-after"]) > 0 and "busy" in r.json()["error"]["message"]
            r = c.post(
                "/v1/chat/completions",
                json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "air filter?"}]},
            )
            assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"
        finally:
            slot.release()
        assert (
            c.post("/collections/m/ask", json={"question": "How often should the air filter be cleaned?"}).status_code
            == 200
        )
        assert gate.active == 0 and gate.waiting == 0


def test_delete_reindex_passages_and_embeddings(loaded):
    docs = loaded.get("/collections/manuals/documents").json()["documents"]
    hit = loaded.post("/collections/manuals/search", json={"query": "air filter", "k": 1}).json()["hits"][0]
    p = loaded.get(f"/collections/manuals/passages/{hit['chunk_id']}?window=1").json()
    assert p["text"] == hit["text"] and p["source"] == hit["source"] and "before" in p and "after" in p
    assert loaded.get("/collections/manuals/passages/zzz").status_code == 404
    target = docs[0]
    job = wait_job(loaded, loaded.post(f"/collections/manuals/documents/{target['id']}/reindex").json()["id"])
    assert job["status"] == "committed" and job["files"][0]["status"] == "committed", job
    job = wait_job(loaded, loaded.delete(f"/collections/manuals/documents/{target['id']}").json()["id"])
    assert job["status"] == "committed"
    names = [d["name"] for d in loaded.get("/collections/manuals/documents").json()["documents"]]
    assert target["name"] not in names and len(names) == len(docs) - 1
    e = loaded.post("/v1/embeddings", json={"model": "manuals", "input": ["a pump", "b"]}).json()
    assert len(e["data"]) == 2 and len(e["data"][0]["embedding"]) == HashEmbedder.dim
    assert loaded.post("/v1/embeddings", json={"model": "manuals", "input": []}).status_code == 400


def test_readers_keep_the_last_complete_generation_until_an_ingest_finishes(loaded):
    services = loaded.app.state.services
    with services.collections.reading("manuals") as kb:
        before = kb.store.chunks.generation
    # a writer commits vectors and chunks but has not yet written the BM25 index: readers stay where they were
    from rag.knowledge_base import KnowledgeBase

    writer = KnowledgeBase.open(services.collections.root / "manuals", embedder=HashEmbedder(), create=False)
    extra = services.collections.root / "extra.md"
    extra.write_text("# Extra\n\nThe extra pump hums loudly.")
    import unittest.mock

    from ingest.pipeline import IngestOptions, ingest

    with unittest.mock.patch.object(type(writer.store), "refresh_lexical", lambda self: None):
        ingest(writer.store, writer.embedder, [extra], IngestOptions(progress=False))
    assert writer.store.chunks.generation == before + 1
    with services.collections.reading("manuals") as kb:
        assert kb.store.chunks.generation == before + 1 and kb.store is not None
        reader_generation = services.collections._readers["manuals"].generation
    assert reader_generation == before  # the index it searches is still the last complete one
    writer.store.refresh_lexical()
    writer.close()
    with services.collections.reading("manuals"):
        assert services.collections._readers["manuals"].generation == before + 1
    hits = loaded.post("/collections/manuals/search", json={"query": "extra pump hums", "k": 1}).json()["hits"]
    assert hits[0]["source"].endswith("extra.md")


def test_all_collections_answers_from_every_collection_the_key_may_use(loaded):
    loaded.post("/collections", json={"name": "notes"})
    wait_job(
        loaded,
        upload(loaded, "notes", [("garden.md", b"# Garden\n\nWater the tomato plants every morning in July.")]).json()[
            "id"
        ],
    )
    ids = [m["id"] for m in loaded.get("/v1/models").json()["data"]]
    assert ids == ["manuals", "notes", "all-collections"]
    r = loaded.post(
        "/v1/chat/completions",
        json={
            "model": "all-collections",
            "messages": [{"role": "user", "content": "When should the tomato plants be watered?"}],
        },
    ).json()
    names = {s["name"] for s in r["sources"]}
    assert "garden.md" in names and len(names) > 1 and r["model"] == "all-collections"
    assert any(s["cited"] and s["name"] == "garden.md" for s in r["sources"]), r
    assert {s["collection"] for s in r["sources"]} == {"manuals", "notes"}  # a citation opens its passage there
    chat = loaded.post("/chats", json={"collection": "all-collections"}).json()["id"]
    turn = loaded.post(f"/chats/{chat}/messages", json={"question": "When should the tomato plants be watered?"}).json()
    garden = [c for c in turn["citations"] if c["source"].endswith("garden.md")]
    assert garden and loaded.get(f"/collections/notes/passages/{garden[0]['chunk_id']}").status_code == 200


def test_serve_refuses_a_public_address_without_keys_and_keys_are_managed_from_the_cli(tmp_path, capsys):
    from rag.cli import main

    root = tmp_path / "root"
    assert main(["serve", "--root", str(root), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "without API keys" in err and "rag keys create" in err and "Traceback" not in err
    assert main(["keys", "create", "--root", str(root), "--scopes", "read,ingest", "--name", "bot"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("rk-")
    assert main(["keys", "create", "--root", str(root), "--scopes", "superuser"]) == 2
    assert "unknown scope" in capsys.readouterr().err
    main(["keys", "list", "--root", str(root)])
    key_id = capsys.readouterr().out.split()[0]
    with TestClient(make_app(root)) as c:
        assert c.get("/collections", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert main(["keys", "revoke", key_id, "--root", str(root)]) == 0
        assert c.get("/collections", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_stores_made_before_are_collections_and_the_api_page_needs_no_network(tmp_path):
    from rag.config import Config, IndexConfig
    from rag.knowledge_base import KnowledgeBase

    root = tmp_path / "root"
    with KnowledgeBase.open(root / "old", Config(index=IndexConfig(gpu=False)), embedder=HashEmbedder()) as kb:
        kb.ingest([CORPUS], progress=False)
    with TestClient(make_app(root)) as c:
        assert [x["name"] for x in c.get("/collections").json()["collections"]] == ["old"]
        assert c.post("/collections/old/search", json={"query": "warranty"}).json()["hits"]
        page = c.get("/docs").text
        assert "/docs-assets/swagger-ui-bundle.js" in page and "cdn" not in page.lower()
        assert c.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
        assert "/v1/chat/completions" in c.get("/openapi.json").json()["paths"]


def test_the_chat_page_and_its_files_come_from_the_server_only(client):
    import re

    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert "/static/js/main.js" in assets and "/static/style.css" in assets
    for asset in assets:
        assert asset.startswith(("/static/", "data:")), asset
        if asset.startswith("/static/"):
            assert client.get(asset).status_code == 200
    modules = sorted(p.name for p in (Path(__file__).parents[1] / "rag" / "serve" / "static" / "js").glob("*.js"))
    assert "main.js" in modules
    # no URL of another host anywhere in the page's files
    for name in ("index.html", "style.css", *(f"js/{m}" for m in modules)):
        text = client.get("/static/" + name).text
        assert not re.search(r"https?://|//[a-z0-9-]+\.[a-z]", text, re.I), name
    assert client.get("/static/../app.py").status_code == 404
