"""The llama.cpp build flags printed for the README's install command: every SIMD extension the CPU reports, no AMX."""

from __future__ import annotations

import subprocess
import sys

from rag.llm.build_flags import build_simd, cmake_args, cpu_flags
from tests.conftest import ROOT

AVX512_CPU = (
    "processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 bmi2 fma f16c avx512f avx512cd avx512vl avx512dq avx512bw "
    "avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16\n"
)


def _options(args: str) -> dict[str, str]:
    return dict(a.removeprefix("-DGGML_").split("=") for a in args.split())


def test_avx512_cpu_gets_avx512_and_never_amx():
    options = _options(cmake_args(cpu_flags(AVX512_CPU), "x86_64"))
    assert options["NATIVE"] == "OFF"
    assert options["AVX512"] == options["AVX512_VNNI"] == options["AVX512_BF16"] == "ON"
    assert options["AVX512_VBMI"] == "OFF"  # not in this CPU's flags
    assert options["AMX_TILE"] == options["AMX_INT8"] == options["AMX_BF16"] == "OFF"


def test_avx2_cpu_gets_no_avx512_extension_even_if_one_flag_is_reported():
    cpu = "flags : sse4_2 avx avx2 fma f16c avx512_bf16\n"  # no avx512f: the extension cannot be used
    options = _options(cmake_args(cpu_flags(cpu), "x86_64"))
    assert options["AVX2"] == "ON" and options["BMI2"] == "OFF"
    assert options["AVX512"] == options["AVX512_BF16"] == "OFF"


def test_unknown_x86_cpu_and_portable_get_the_avx2_set_and_other_cpus_a_native_build():
    assert cmake_args(None, "AMD64") == cmake_args(cpu_flags(AVX512_CPU), "x86_64", portable=True)
    assert "AVX512=ON" not in cmake_args(None, "x86_64") and "AVX2=ON" in cmake_args(None, "x86_64")
    assert cmake_args(cpu_flags(AVX512_CPU), "aarch64") == "-DGGML_NATIVE=ON"


def test_runs_as_a_file_before_anything_is_installed():
    # -S: no site packages, so nothing is imported early that a module of rag/llm/ could shadow if it led the path
    out = subprocess.run(
        [sys.executable, "-S", str(ROOT / "rag" / "llm" / "build_flags.py")],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert out.stdout.startswith("-DGGML_NATIVE=") and "AMX_TILE=OFF" in out.stdout


def test_rag_info_names_the_builds_simd_and_asks_for_a_rebuild_only_where_avx512_is_unused():
    avx2_build = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | AVX512 = 0 | OPENMP = 1 | "
    avx512_build = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | AVX512 = 1 | AVX512_BF16 = 1 | OPENMP = 1 | "
    assert build_simd(avx512_build, cpu_flags(AVX512_CPU)) == "AVX512"
    assert build_simd(avx2_build, cpu_flags(AVX512_CPU)).startswith("AVX2; this CPU has AVX-512: rebuild")
    assert build_simd(avx2_build, {"avx2", "fma"}) == "AVX2"
    assert build_simd("CPU : NEON = 1 | ARM_FMA = 1 | ", None) == ""
