"""A LoRA adapter from ``rag finetune llm`` (a peft folder) as a GGUF adapter, so that llama.cpp applies it to the
GGUF base it was trained from instead of transformers running a bf16 copy of that base.

The adapter's ``lora_A``/``lora_B`` matrices are written unchanged under llama.cpp's tensor names (``gguf``'s
name map, the one llama.cpp's own converter uses), with the adapter's alpha; it is converted once into the cache,
keyed by the adapter's weights. Only architectures whose attention weights llama.cpp stores as transformers does
are converted (Qwen2, the presets' family); others, and adapters with options llama.cpp does not apply (DoRA,
rsLoRA, extra trained modules), stay on transformers.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from indexes.errors import ConfigError, require
from indexes.files import build_once, cache_dir

log = logging.getLogger(__name__)

ARCHITECTURES = ("qwen2",)  # llama-family GGUFs permute q/k rows, which this converter does not do
_PREFIX = "base_model.model."


def adapter_config(folder: str | Path) -> dict | None:
    """The ``adapter_config.json`` of a LoRA adapter folder, or None if ``folder`` is not one."""
    path = Path(folder).expanduser() / "adapter_config.json"
    return json.loads(path.read_text()) if path.is_file() else None


def unsupported(config: dict) -> str | None:
    """Why llama.cpp cannot apply this adapter as it is, or None."""
    if config.get("peft_type", "LORA") != "LORA":
        return f"a {config.get('peft_type')} adapter"
    for option in ("use_dora", "use_rslora", "fan_in_fan_out"):
        if config.get(option):
            return f"{option} is set"
    if config.get("modules_to_save"):
        return "it trains whole modules besides the LoRA matrices"
    if config.get("alpha_pattern") or config.get("rank_pattern"):
        return "its rank or alpha differ between modules"
    return None


def gguf_adapter(folder: str | Path, base_gguf: Path) -> Path:
    """The adapter in ``folder`` as a GGUF file for ``base_gguf``, converted once into the cache."""
    folder = Path(folder).expanduser().resolve()
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        raise ConfigError(f"{folder} has no adapter_model.safetensors; train it again with `rag finetune llm`")
    stat = weights.stat()
    key = hashlib.sha1(f"{folder}:{stat.st_size}:{int(stat.st_mtime)}:{base_gguf.name}".encode()).hexdigest()[:12]

    def convert(out: Path) -> None:
        log.info("converting the LoRA adapter %s to GGUF for llama.cpp, once", folder.name)
        write_gguf_adapter(folder, base_gguf, out / "adapter.gguf")

    return build_once(cache_dir() / "models" / "lora" / f"{folder.name}-{key}", convert) / "adapter.gguf"


def write_gguf_adapter(folder: Path, base_gguf: Path, out: Path) -> None:
    """Write the peft adapter in ``folder`` as a llama.cpp LoRA GGUF for ``base_gguf``. Raises ``ConfigError``."""
    gguf = require("gguf", "llm")
    st = require("safetensors.torch", "llm", "safetensors")
    config = adapter_config(folder) or {}
    reason = unsupported(config)
    if reason:
        raise ConfigError(f"llama.cpp cannot apply the adapter in {folder}: {reason}")
    reader = gguf.GGUFReader(str(base_gguf))
    arch = _field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise ConfigError(f"LoRA adapters on llama.cpp support {', '.join(ARCHITECTURES)} bases, not {arch}")
    base_tensors = {t.name for t in reader.tensors}
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], int(_field(reader, f"{arch}.block_count")))
    pairs: dict[str, dict[str, object]] = {}
    for key, tensor in st.load_file(str(folder / "adapter_model.safetensors")).items():
        module, _, part = key.removeprefix(_PREFIX).rpartition(".lora_")
        if part not in ("A.weight", "B.weight"):
            raise ConfigError(f"unexpected tensor {key} in the adapter {folder}")
        target = names.get_name(f"{module}.weight", try_suffixes=(".weight",))
        if target is None or target not in base_tensors:
            raise ConfigError(
                f"the adapter's {module} has no counterpart in {base_gguf.name}: was it trained on another base?"
            )
        pairs.setdefault(target, {})[part[0]] = tensor.float().numpy()
    if not pairs or any(len(p) != 2 for p in pairs.values()):
        raise ConfigError(f"the adapter in {folder} has no complete lora_A/lora_B pairs")
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_string(gguf.Keys.General.TYPE, gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(config.get("lora_alpha", config.get("r", 8))))
    for target, pair in sorted(pairs.items()):
        writer.add_tensor(f"{target}.lora_a", pair["A"])  # (r, in): ggml reads it as ne = [in, r], as llama.cpp wants
        writer.add_tensor(f"{target}.lora_b", pair["B"])  # (out, r)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _field(reader, key: str) -> str | int:
    field = reader.fields.get(key)
    if field is None:
        raise ConfigError(f"the GGUF file has no {key}")
    value = field.parts[field.data[0]]
    return bytes(value).decode("utf-8") if value.dtype.kind == "u" and value.dtype.itemsize == 1 else value.item()
