"""One contract every vector backend passes, checked against exact numpy search."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from indexes.vector import open_index

BACKENDS = ["numpy", "faiss", "chroma", "milvus", "faiss-hnsw", "faiss-ivf", "chroma-server", "milvus-server"]
_NEEDS = {"chroma": "chromadb", "milvus": "milvus_lite"}


@pytest.fixture
def _open(request):
    """Open an index of a backend kind; ``-server`` kinds keep their vectors on a live server, one collection per
    test."""
    collection = f"t{uuid.uuid4().hex[:12]}"
    opened = []

    def open_kind(kind: str, directory, dim: int, generation: int):
        index = _open_index(kind, directory, dim, generation)
        opened.append(index)
        return index

    def _open_index(kind: str, directory, dim: int, generation: int):
        if kind.startswith("faiss-"):
            return open_index("faiss", directory, dim, generation, {"type": kind.split("-")[1], "gpu": False})
        base = kind.removesuffix("-server")
        if base in _NEEDS:
            pytest.importorskip(_NEEDS[base])
        if kind.endswith("-server"):
            uri = request.getfixturevalue(f"{base}_server")
            return open_index(base, directory, dim, generation, {"uri": uri, "collection": collection})
        return open_index(kind, directory, dim, generation)

    yield open_kind
    for index in opened:  # a database client lets go of its connection (or milvus-lite's file)
        if hasattr(index, "close"):
            index.close()


def _data(n=300, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ids = rng.choice(2**62, size=n, replace=False).astype(np.int64)
    return ids, v


@pytest.mark.parametrize("kind", BACKENDS)
def test_search_matches_exact_and_survives_reopen(kind, tmp_path, _open):
    ids, v = _data()
    index = _open(kind, tmp_path, 16, 0)
    index.add(ids, v)
    assert len(index) == 300
    q = v[:5] + 0.01
    got = index.search(q, 5)
    exact = np.argsort(-(q @ v.T), axis=1)[:, :5]
    for row, want in zip(got, exact):
        assert row[0].id == ids[want[0]]
        assert [r.score for r in row] == sorted((r.score for r in row), reverse=True)
        assert row[0].score > 0.9
    index.save(1)
    again = _open(kind, tmp_path, 16, 1)
    assert len(again) == 300
    assert again.search(q[:1], 1)[0][0].id == got[0][0].id


@pytest.mark.parametrize("kind", BACKENDS)
def test_remove_and_replace(kind, tmp_path, _open):
    ids, v = _data()
    index = _open(kind, tmp_path, 16, 0)
    index.add(ids, v)
    index.remove(ids[:10])
    index.remove(np.array([12345], np.int64))  # absent: ignored
    assert len(index) == 290
    assert ids[0] not in {r.id for r in index.search(v[:1], 20)[0]}
    index.add(ids[10:11], -v[10:11])  # replacing keeps one vector per id
    assert len(index) == 290
    assert index.search(-v[10:11], 1)[0][0].id == ids[10]
    assert set(index.ids().tolist()) == set(ids[10:].tolist())


@pytest.mark.parametrize("kind", BACKENDS)
def test_allowed_ids_filter(kind, tmp_path, _open):
    ids, v = _data()
    index = _open(kind, tmp_path, 16, 0)
    index.add(ids, v)
    allowed = ids[100:110]
    res = index.search(v[:1], 5, allowed)[0]
    assert res and {r.id for r in res} <= set(allowed.tolist())
    assert index.search(v[:1], 5, np.array([], np.int64))[0] == []


@pytest.mark.parametrize("kind", BACKENDS)
def test_empty_index_returns_nothing(kind, tmp_path, _open):
    index = _open(kind, tmp_path, 16, 0)
    assert index.search(np.ones((2, 16), np.float32), 3) == [[], []]
