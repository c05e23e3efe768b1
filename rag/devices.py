"""Which device each part runs on (``rag info``): the embedder (torch, or onnxruntime where it applies),
the FAISS index and the LLM (llama.cpp offload or torch), found without loading any model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from rag.config import Config


def _torch_device(configured: str | None) -> str:
    if configured:
        return configured
    if importlib.util.find_spec("torch") is None:
        return "cpu"
    import torch

    return f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"


def devices(config: Config, index_backend: str, index_gpu: bool, embedder: str | None = None) -> dict[str, str]:
    """``embedder``: the store's, to say whether it runs on onnxruntime (``ingest.embed.onnx``)."""
    from ingest.embed.models import inference_dtype, resolve_model_path
    from ingest.embed.onnx import covered
    from rag.llm import runs_on_llama_cpp
    from rag.llm.build_flags import build_simd, this_cpu
    from rag.llm.presets import physical_cores

    device = _torch_device(config.device)
    dtype = inference_dtype(config.embedder_dtype, device)
    onnx = embedder is not None and covered(Path(resolve_model_path(embedder)))
    out = {
        "embedder": "onnxruntime on cpu, float32"
        if onnx and device == "cpu" and dtype == "float32"
        else f"{device}, {dtype}"
    }
    if embedder is not None:
        out["queries"] = "onnxruntime on cpu, float32" if onnx else f"{device}, float32"
    if index_backend == "faiss":
        gpus = 0
        if index_gpu and importlib.util.find_spec("faiss") is not None:
            import faiss

            gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        out["index"] = (
            f"faiss on {gpus} GPU(s)" if gpus else "faiss on cpu" + ("" if index_gpu else " (index.gpu=false)")
        )
    else:
        out["index"] = f"{index_backend} on cpu"
    llm = config.llm
    name = llm.name.lower()
    if name in ("extractive", "none"):
        out["llm"] = "none (extractive)"
    elif name.startswith(("http://", "https://")):
        out["llm"] = f"remote server {llm.name}"
    elif runs_on_llama_cpp(llm.name, llm.backend):
        import llama_cpp

        gpu = bool(getattr(llama_cpp, "llama_supports_gpu_offload", lambda: False)())
        simd = build_simd(llama_cpp.llama_print_system_info().decode("utf-8", "replace"), this_cpu())
        out["llm"] = (
            "llama.cpp, all layers on the GPU"
            if gpu
            else f"llama.cpp on cpu ({physical_cores()} threads{', ' + simd if simd else ''})"
        )
    else:
        out["llm"] = f"transformers on {_torch_device(llm.device or config.device)}"
    return out
