"""CMake flags that build llama.cpp (llama-cpp-python) for this CPU, printed for ``CMAKE_ARGS``.

    CMAKE_ARGS="$(python3 rag/llm/build_flags.py)" pip install -e '.[models]'

On x86-64 Linux every SIMD extension that ``/proc/cpuinfo`` reports is switched on, AVX-512 included (prompts read
1.3-1.7x faster than with an AVX2 build, measured in benchmarks/RESULTS.md), and AMX never: a virtual machine can
report AMX without allowing it, and a ``GGML_NATIVE`` build then dies with "Illegal instruction". Other CPUs get
llama.cpp's own native build. ``--portable`` prints the AVX2 set, for a wheel meant for other machines. Standard
library only, so it runs before the project is installed.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # run as a file, rag/llm/ heads the path: its modules must not shadow installed ones
    del sys.path[0]

import platform  # noqa: E402
from pathlib import Path  # noqa: E402

PORTABLE = {"SSE42": True, "AVX": True, "AVX2": True, "BMI2": True, "FMA": True, "F16C": True}
# ggml option -> the /proc/cpuinfo flags it needs (GGML_AVX512 compiles with -mavx512{f,cd,vl,dq,bw})
X86 = {
    "SSE42": ("sse4_2",),
    "AVX": ("avx",),
    "AVX2": ("avx2",),
    "BMI2": ("bmi2",),
    "FMA": ("fma",),
    "F16C": ("f16c",),
    "AVX_VNNI": ("avx_vnni",),
    "AVX512": ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"),
    "AVX512_VBMI": ("avx512f", "avx512vbmi"),
    "AVX512_VNNI": ("avx512f", "avx512_vnni"),
    "AVX512_BF16": ("avx512f", "avx512_bf16"),
}
NO_AMX = ("AMX_TILE", "AMX_INT8", "AMX_BF16")


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of the first processor in a ``/proc/cpuinfo`` text."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cmake_args(flags: set[str] | None, machine: str, portable: bool = False) -> str:
    """The ``CMAKE_ARGS`` for a CPU with these cpuinfo ``flags`` (None: unknown) and ``platform.machine()``."""
    x86 = machine.lower() in ("x86_64", "amd64", "i686", "i386")
    if not x86:
        return "-DGGML_NATIVE=ON"
    if portable or not flags:
        options = PORTABLE
    else:
        options = {name: all(f in flags for f in needs) for name, needs in X86.items()}
        if not options["AVX512"]:
            options.update(AVX512_VBMI=False, AVX512_VNNI=False, AVX512_BF16=False)
    options = {**options, **{name: False for name in NO_AMX}}
    return " ".join(["-DGGML_NATIVE=OFF"] + [f"-DGGML_{name}={'ON' if on else 'OFF'}" for name, on in options.items()])


def this_cpu() -> set[str] | None:
    info = Path("/proc/cpuinfo")
    return cpu_flags(info.read_text()) if info.exists() else None


def build_simd(system_info: str, flags: set[str] | None) -> str:
    """The widest SIMD a llama.cpp build uses (from ``llama_print_system_info()``), with a hint to rebuild where this
    CPU has AVX-512 and the build does not use it; empty where the build reports neither."""
    used = {m.split(" = ")[0].strip() for m in system_info.split("|") if m.strip().endswith("= 1")}
    level = "AVX512" if "AVX512" in used else "AVX2" if "AVX2" in used else ""
    if level == "AVX2" and flags and all(f in flags for f in X86["AVX512"]):
        return ('AVX2; this CPU has AVX-512: rebuild with `CMAKE_ARGS="$(python3 rag/llm/build_flags.py)"` '
                "for faster prompts")
    return level


def main(argv: list[str]) -> int:
    portable = "--portable" in argv
    print(cmake_args(this_cpu(), platform.machine(), portable))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
