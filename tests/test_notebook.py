"""The quickstart notebook runs top to bottom on the example corpus (without an LLM, to stay fast)."""

from __future__ import annotations

import os

import pytest

from tests.conftest import CORPUS, ROOT


@pytest.mark.enable_socket  # the kernel talks to the client over loopback only (--allow-hosts)
def test_quickstart_notebook_executes(e5, monkeypatch, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's temporary store goes with tmp_path
    monkeypatch.setenv("RAG_LLM", "extractive")
    monkeypatch.setenv("RAG_EXAMPLE_CORPUS", str(CORPUS))
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}
    ).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "保修与服务.md" in outputs and "[1]" in outputs


@pytest.mark.enable_socket
def test_adaptation_notebook_executes_on_a_tiny_configuration(e5, monkeypatch, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from tests.test_finetune import _corpus

    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's store (a fine-tuned model: ~0.5 GB) goes with tmp_path
    monkeypatch.setenv("RAG_QUESTION_LLM", "ict")
    monkeypatch.setenv("RAG_FINETUNE_DOCS", str(_corpus(tmp_path)))
    monkeypatch.setenv("RAG_FINETUNE_CHUNKS", "40")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(ROOT / "notebooks" / "adaptation.ipynb", as_version=4)
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}
    ).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "before  nDCG@10" in outputs and "after   nDCG@10" in outputs and " v2 " in outputs
