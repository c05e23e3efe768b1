"""Every route behind the right key, every input bounded, no server path in any body, and the OpenAI surface
telling the truth (model lookup, finish_reason and usage under max_tokens, 400s, Open WebUI's task prompts)."""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from rag.serve.db import ServerDB  # noqa: E402
from rag.serve.keys import create_key  # noqa: E402
from tests.test_serve import ScriptedLLM, client, corpus_files, loaded, make_app, upload, wait_job  # noqa: E402,F401

ASK = {"question": "How often should the air filter be cleaned?"}
CHAT = {"model": "a", "messages": [{"role": "user", "content": "How often should the air filter be cleaned?"}]}
PUBLIC, SCOPED, HIDDEN, OWNED = "public", "scoped", "hidden", "owned"
# Every route: method, path, body, the scope it needs, and whom it is about: PUBLIC (nobody: /healthz, /readyz),
# None (the caller: lists filtered by key), SCOPED (collection "a": 403 for a key for another collection), OWNED
# (a chat: 404 for anyone else), HIDDEN (a job of collection "a": 404 for a key for another collection). Destructive
# rows come after the rows that need what they remove.
ROUTES = [
    ("GET", "/healthz", None, None, PUBLIC),
    ("GET", "/readyz", None, None, PUBLIC),
    ("GET", "/metrics", None, "read", None),
    ("GET", "/docs", None, "read", None),
    ("GET", "/openapi.json", None, "read", None),
    ("GET", "/v1/models", None, "read", None),
    ("GET", "/v1/models/{model_id}", None, "read", SCOPED),
    ("POST", "/v1/chat/completions", CHAT, "read", SCOPED),
    ("POST", "/v1/embeddings", {"model": "a", "input": "filter"}, "read", SCOPED),
    ("GET", "/collections", None, "read", None),
    ("POST", "/collections", {"name": "fresh"}, "admin", SCOPED),
    ("GET", "/collections/{name}", None, "read", SCOPED),
    ("GET", "/collections/{name}/versions", None, "read", SCOPED),
    ("POST", "/collections/{name}/versions/{version}/activate", None, "admin", SCOPED),
    ("GET", "/collections/{name}/documents", None, "read", SCOPED),
    ("POST", "/collections/{name}/documents", "upload", "ingest", SCOPED),
    ("GET", "/collections/{name}/documents/{document}", None, "read", SCOPED),
    ("POST", "/collections/{name}/documents/{document}/reindex", None, "ingest", SCOPED),
    ("GET", "/collections/{name}/jobs", None, "read", SCOPED),
    ("GET", "/jobs/{job_id}", None, "read", HIDDEN),
    ("GET", "/jobs/{job_id}/events", None, "read", HIDDEN),
    ("POST", "/collections/{name}/search", {"query": "air filter"}, "read", SCOPED),
    ("POST", "/collections/{name}/ask", ASK, "read", SCOPED),
    ("GET", "/collections/{name}/passages/{chunk_id}", None, "read", SCOPED),
    ("GET", "/collections/{name}/passages/{pdf_chunk_id}/page.png", None, "read", SCOPED),
    ("GET", "/chats", None, "read", None),
    ("POST", "/chats", {"collection": "a"}, "read", SCOPED),
    ("GET", "/chats/{chat_id}", None, "read", OWNED),
    ("POST", "/chats/{chat_id}/messages", ASK, "read", OWNED),
    ("DELETE", "/chats/{chat_id}", None, "read", OWNED),
    ("DELETE", "/collections/{name}/documents/{spare}", None, "ingest", SCOPED),
    ("DELETE", "/collections/{fresh}", None, "admin", SCOPED),
]


def call(c, method, path, body, headers):
    if body == "upload":
        return upload(c, "a", [("extra.md", b"# Extra\n\nA note about the fan.")], headers=headers)
    return c.request(method, path, json=body, headers=headers)


def test_every_route_answers_each_kind_of_key_with_its_status_and_no_server_path(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    db = ServerDB(root)
    _, admin = create_key(db, "admin", ["admin"])
    _, reader = create_key(db, "reader", ["read"])
    _, other = create_key(db, "other", ["admin"], ["b"])
    db.close()
    keys = {"none": None, "wrong": "rk-not-a-key", "reader": reader, "other collection": other, "admin": admin}
    with TestClient(make_app(root)) as c:
        a = {"Authorization": f"Bearer {admin}"}
        listed = {(m.upper(), p) for p, ms in c.app.openapi()["paths"].items() for m in ms}
        # the table misses no route, and names none that is gone
        tabled = {(m, p.replace("{spare}", "{document}").replace("{fresh}", "{name}").replace("{pdf_chunk_id}",
                                                                                                "{chunk_id}"))
                  for m, p, *_ in ROUTES}
        assert tabled == listed | {("GET", "/docs"), ("GET", "/openapi.json")}
        for name in ("a", "b"):
            assert c.post("/collections", json={"name": name}, headers=a).status_code == 201
        job = wait_job(
            c,
            upload(c, "a", corpus_files() + [("spare.md", b"# Spare\n\nTo be deleted.")], headers=a).json()["id"],
            headers=a,
        )
        docs = {d["name"]: d["id"] for d in c.get("/collections/a/documents", headers=a).json()["documents"]}
        hit = c.post("/collections/a/search", json={"query": "air filter"}, headers=a).json()["hits"][0]
        pdf_hit = next(h for h in c.post("/collections/a/search", json={"query": "smart meters P1 protocol", "k": 10},
                                         headers=a).json()["hits"] if h["source"].endswith(".pdf"))
        fill = {
            "name": "a",
            "model_id": "a",
            "fresh": "fresh",
            "document": docs["aurora-manual.md"],
            "spare": docs["spare.md"],
            "job_id": job["id"],
            "chunk_id": hit["chunk_id"],
            "pdf_chunk_id": pdf_hit["chunk_id"],
            "chat_id": c.post("/chats", json={"collection": "a"}, headers=a).json()["id"],
            "version": next(
                v["version"] for v in c.get("/collections/a/versions", headers=a).json()["versions"] if v["active"]
            ),
        }
        server_root = str(root.resolve())
        for method, template, body, scope, about in ROUTES:
            path = template.format(**fill)
            for kind, token in keys.items():
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                r = call(c, method, path, body, headers)
                if about == PUBLIC:
                    expected = 200
                elif kind in ("none", "wrong"):
                    expected = 401
                elif kind == "reader" and scope != "read":
                    expected = 403  # a key without the scope
                elif about == OWNED and kind != "admin":
                    expected = 404  # someone else's chat
                elif kind == "other collection" and about in (SCOPED, HIDDEN):
                    expected = 403 if about == SCOPED else 404
                else:
                    expected = 0  # success: 200, 201, 202 or 204
                assert (200 <= r.status_code < 300) if expected == 0 else r.status_code == expected, (
                    method,
                    path,
                    kind,
                    r.status_code,
                    r.text[:200],
                )
                assert server_root not in r.text, (method, path, kind, r.text[:300])


def test_inputs_are_bounded_on_every_route_the_openai_ones_included(loaded):
    started = time.monotonic()
    r = loaded.post(
        "/v1/chat/completions", json={"model": "manuals", "messages": [{"role": "user", "content": "x" * 100_000}]}
    )
    assert r.status_code == 413 and "100,000 characters" in r.json()["error"]["message"]
    assert time.monotonic() - started < 5  # refused before any retrieval or LLM work (generous for a busy machine)
    many = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}] * 60 + [
        {"role": "user", "content": "q?"}
    ]
    assert loaded.post("/v1/chat/completions", json={"model": "manuals", "messages": many}).status_code == 400
    r = loaded.post("/v1/chat/completions", json={**CHAT, "model": "manuals", "max_tokens": 0})
    # OpenAI's status for an invalid request
    assert (r.status_code == 400 and "max_tokens" in r.json()["error"]["message"])
    assert loaded.post("/v1/chat/completions", json={"model": "manuals", "messages": []}).status_code == 400
    big = json.dumps({"query": "y" * (2 << 20)})
    r = loaded.post("/collections/manuals/search", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "MiB" in r.json()["error"]["message"]
    chunked = (part for part in [b'{"query": "', b"y" * (1 << 20), b'"}'])  # no Content-Length: counted as it arrives
    r = loaded.post("/collections/manuals/search", content=chunked, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "MiB" in r.json()["error"]["message"]
    assert loaded.post("/collections/manuals/ask", json={"question": "x" * 4001}).status_code == 422


def test_no_response_carries_the_servers_own_paths(loaded, tmp_path):
    c = loaded
    root = str(c.app.state.services.collections.root.resolve())
    bodies = [
        c.get("/collections/manuals").text,
        c.get("/collections/manuals/documents").text,
        c.get("/collections/manuals/jobs").text,
        c.post("/collections/manuals/search", json={"query": "air filter"}).text,
        c.post("/collections/manuals/ask", json=ASK).text,
    ]
    hits = c.post("/collections/manuals/search", json={"query": "air filter"}).json()["hits"]
    assert hits[0]["source"] == "aurora-manual.md"  # the upload's own name
    bodies.append(c.get(f"/collections/manuals/passages/{hits[0]['chunk_id']}").text)
    job = upload(c, "manuals", [("note.md", b"# Note\n\nThe fan is quiet.")]).json()
    bodies += [json.dumps(job), json.dumps(wait_job(c, job["id"]))]
    with c.stream("POST", "/collections/manuals/ask", json={**ASK, "stream": True}) as resp:
        bodies.append(resp.read().decode())
    bodies.append(c.post("/v1/chat/completions", json={**CHAT, "model": "manuals"}).text)
    with c.stream("POST", "/v1/chat/completions", json={**CHAT, "model": "manuals", "stream": True}) as resp:
        bodies.append(resp.read().decode())
    chat = c.post("/chats", json={"collection": "manuals"}).json()["id"]
    bodies += [c.post(f"/chats/{chat}/messages", json=ASK).text, c.get(f"/chats/{chat}").text]
    for body in bodies:
        assert root not in body and str(tmp_path) not in body, body[:500]


def test_model_lookup_task_prompts_and_truthful_finish_reason_and_usage(loaded):
    c = loaded
    assert c.get("/v1/models/manuals").json()["id"] == "manuals"
    r = c.get("/v1/models/nope")
    assert r.status_code == 404 and "no collection 'nope'" in r.json()["error"]["message"]

    llm: ScriptedLLM = c.app.state.services.collections.generator
    asked = len(llm.rewrites)
    title = {
        "model": "manuals",
        "stream": False,
        "messages": [
            {
                "role": "user",
                "content": (
                    "### Task:\nGenerate a concise, 3-5 word title with an emoji summarizing the chat history.\n### "
                    "Output:\n"
                    'JSON format: { "title": "your concise title here" }\n### Chat History:\n<chat_history>\n'
                    "USER: How often should the air filter be cleaned?\nASSISTANT: Every three months "
                    "[1].\n</chat_history>"
                ),
            }
        ],
    }
    r = c.post("/v1/chat/completions", json=title).json()
    assert json.loads(r["choices"][0]["message"]["content"]) == {"title": "How often should the air filter be cleaned?"}
    assert not r.get("sources")
    follow = {
        **title,
        "stream": True,
        "messages": [
            {
                "role": "user",
                "content": title["messages"][0]["content"].replace(
                    '{ "title": "your concise title here" }', '{ "follow_ups": ["Question 1?"] }'
                ),
            }
        ],
    }
    with c.stream("POST", "/v1/chat/completions", json=follow) as resp:
        lines = [x[6:] for x in resp.iter_lines() if x.startswith("data: ")]
    assert lines[-1] == "[DONE]" and json.loads(json.loads(lines[0])["choices"][0]["delta"]["content"]) == {
        "follow_ups": []
    }
    assert len(llm.rewrites) == asked  # no LLM call, no retrieval

    class Wordy(ScriptedLLM):
        """Writes one word a token, up to the limit it is given."""

        def stream(self, messages, max_new_tokens=512):
            words = "The warranty is five years for the whole unit and ten for the compressor".split()
            for word in words[:max_new_tokens]:
                yield word + " "

    c.app.state.services.collections.generator = Wordy()
    r = c.post("/v1/chat/completions", json={**CHAT, "model": "manuals", "max_tokens": 5}).json()
    assert r["choices"][0]["finish_reason"] == "length" and r["usage"]["completion_tokens"] <= 5
    r = c.post("/v1/chat/completions", json={**CHAT, "model": "manuals", "max_tokens": 50}).json()
    assert r["choices"][0]["finish_reason"] == "stop" and 0 < r["usage"]["completion_tokens"] <= 50
    with c.stream(
        "POST",
        "/v1/chat/completions",
        json={**CHAT, "model": "manuals", "max_tokens": 5, "stream": True, "stream_options": {"include_usage": True}},
    ) as resp:
        chunks = [json.loads(x[6:]) for x in resp.iter_lines() if x.startswith("data: {")]
    assert [
        c_["choices"][0]["finish_reason"] for c_ in chunks if c_["choices"] and c_["choices"][0]["finish_reason"]
    ] == ["length"]
    assert chunks[-1]["usage"]["completion_tokens"] <= 5
    events = [c_["event"] for c_ in chunks if "event" in c_]
    assert events and all("distances" not in e["data"] for e in events)  # no fused rank score shown as a relevance %


def test_chats_from_before_keys_stay_reachable_by_an_admin(tmp_path):
    root = tmp_path / "root"
    with TestClient(make_app(root)) as c:
        c.post("/collections", json={"name": "m"})
        chat = c.post("/chats", json={"collection": "m", "title": "before keys"}).json()["id"]
    db = ServerDB(root)
    _, admin = create_key(db, "admin", ["admin"])
    _, reader = create_key(db, "reader", ["read"])
    db.close()
    with TestClient(make_app(root)) as c:
        a, rd = {"Authorization": f"Bearer {admin}"}, {"Authorization": f"Bearer {reader}"}
        assert c.get(f"/chats/{chat}", headers=a).json()["title"] == "before keys"
        assert [x["id"] for x in c.get("/chats", headers=a).json()["chats"]] == [chat]
        assert (
            c.get(f"/chats/{chat}", headers=rd).status_code == 404 and c.get("/chats", headers=rd).json()["chats"] == []
        )


def test_readiness_reports_a_stalled_llm(tmp_path):
    with TestClient(make_app(tmp_path / "root", llm_stall_s=0.0)) as c:
        assert c.get("/readyz").status_code == 200
        slot = c.app.state.services.gate.acquire()  # an answer that makes no progress
        try:
            r = c.get("/readyz")
            assert r.status_code == 503 and r.json()["llm"].startswith("stalled")
        finally:
            slot.release()
        assert c.get("/readyz").status_code == 200


def test_the_request_shapes_open_webui_sends_are_answered(loaded):
    body = {
        "stream": True,
        "model": "manuals",
        "stream_options": {"include_usage": True},
        "chat_id": "c-1",
        "id": "m-2",
        "session_id": "s-3",
        "params": {},
        "tool_servers": [],
        "features": {"web_search": False, "memory": False},
        "variables": {"{{USER_NAME}}": "user"},
        "background_tasks": {"title_generation": True, "tags_generation": True},
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": [{"type": "text", "text": "How often should the air filter be cleaned?"}]},
        ],
    }
    with loaded.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        lines = [x[6:] for x in resp.iter_lines() if x.startswith("data: ")]
    chunks = [json.loads(x) for x in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert lines[-1] == "[DONE]" and "three months" in text and chunks[-1]["usage"]["total_tokens"] > 0
    cards = [c["event"]["data"] for c in chunks if "event" in c]
    assert cards and cards[0]["source"]["name"] and cards[0]["document"][0]
