"""How much load a client can drive, and how right its TTFT is: memgap's streaming client
and guidellm's, side by side in one run against benchmarks/fast_stream_server.py.

1. Streamed tokens per client CPU-second. Each client runs as its own process; its CPU
   time (user + system, its worker processes included) comes from ``os.wait4``. Start-up
   (guidellm imports torch and transformers) is not load, so each client runs twice, with
   N and k*N requests, and the rate is the *difference* in tokens over the difference in
   CPU time: the marginal, sustained cost per token. Tokens are counted by the server.
2. TTFT error at 1, 64 and 512 concurrent streams. The server holds every first token
   back a known delay after the request arrives and records the true TTFT it served;
   the error is the client's median TTFT minus the server's median true TTFT.

Target (issue 7): memgap's client sustains at least 1.5x guidellm's tokens per CPU-second.

guidellm is installed for this benchmark only, never as a memgap dependency:

    python3 -m venv /tmp/guidellm-venv && /tmp/guidellm-venv/bin/pip install guidellm
    .venv/bin/python benchmarks/client_capacity.py --guidellm /tmp/guidellm-venv/bin/guidellm

guidellm needs a Hugging Face tokenizer for its synthetic prompts and this machine has no
network: the script writes a tiny word-level one (``transformers`` from guidellm's venv).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
TOKENIZER_SCRIPT = """
import sys
from tokenizers import Tokenizer, models, pre_tokenizers, decoders
from transformers import PreTrainedTokenizerFast
# byte-level, no merges: every text encodes (a word-level vocabulary leaves guidellm's
# synthetic prompts empty, and it then fails those requests)
vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
vocab["<s>"] = len(vocab)
vocab["</s>"] = len(vocab)
tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>").save_pretrained(sys.argv[1])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Measured:
    cpu_s: float
    wall_s: float
    tokens: int  # by the server
    requests: int
    true_ttft_p50_s: float | None
    client: dict[str, Any]  # what the client reported (ttft_p50_s, ...)


def run_measured(argv: list[str], base_url: str, env: dict[str, str] | None = None) -> Measured:
    httpx.post(base_url + "/stats/reset")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        # wait4 reaps the child and gives its rusage, which includes every descendant it
        # waited for (guidellm's worker processes).
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"client failed ({proc.returncode}): {' '.join(argv[:3])}...\n{stderr[-2000:]}")
    stats = httpx.get(base_url + "/stats").json()
    true = stats["true_ttft_s"]
    lines = stdout.strip().splitlines()
    client = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    return Measured(usage.ru_utime + usage.ru_stime, wall, stats["tokens_sent"], stats["requests"],
                    statistics.median(true) if true else None, client)  # fmt: skip


# -- the two clients ------------------------------------------------------------------------


def memgap_argv(url: str, concurrency: int, requests: int, output_tokens: int) -> list[str]:
    return [sys.executable, __file__, "_memgap", url, str(concurrency), str(requests), str(output_tokens)]


def memgap_client_main(url: str, concurrency: int, requests: int, output_tokens: int) -> None:
    """Runs in the measured child process: memgap's client, then one JSON line."""
    from memgap.load.client import run_workload_sync
    from memgap.load.spec import WorkloadSpec

    spec = WorkloadSpec(requests=requests, concurrency=concurrency, prompt_tokens=8, output_tokens=output_tokens,
                        warmup_requests=0, timeout_s=600.0)  # fmt: skip
    res = run_workload_sync(url, spec)
    s = res.summary
    print(json.dumps({"ok": s.requests_ok, "errored": s.requests_errored, "ttft_p50_s": s.ttft_s.p50,
                      "ttft_mean_s": s.ttft_s.mean, "output_tokens": s.output_tokens}))  # fmt: skip


class Guidellm:
    def __init__(self, exe: str, workdir: Path) -> None:
        self.exe = exe
        self.workdir = workdir
        self.tokenizer = workdir / "tokenizer"
        python = str(Path(exe).parent / "python")
        subprocess.run([python, "-c", TOKENIZER_SCRIPT, str(self.tokenizer)], check=True, capture_output=True)
        self.n = 0

    def argv(self, url: str, concurrency: int, requests: int, output_tokens: int) -> tuple[list[str], Path]:
        self.n += 1
        out = self.workdir / f"guidellm-{self.n}.json"
        return [
            self.exe, "run",
            "--backend", f"kind=openai_http,target={url},model=fast,request_format=/v1/completions",
            "--profile", f"kind=concurrent,streams={concurrency}",
            "--constraint", f"kind=max_requests,count={requests}",
            "--data", f"kind=synthetic_text,prompt_tokens=8,output_tokens={output_tokens}",
            "--tokenizer", f"kind=hf_auto,model={self.tokenizer}",
            "--output", f"kind=json,path={out}",
            "--disable-console",
        ], out  # fmt: skip

    @staticmethod
    def report(path: Path) -> dict[str, Any]:
        bench = json.loads(path.read_text())["benchmarks"][0]["metrics"]
        ttft = bench["time_to_first_token_ms"]["successful"]
        return {"ttft_p50_s": ttft["median"] / 1000, "ttft_mean_s": ttft["mean"] / 1000,
                "ok": bench["request_totals"]["successful"]}  # fmt: skip


# -- the measurements -------------------------------------------------------------------------


def tokens_per_cpu_s(small: Measured, large: Measured) -> float:
    return (large.tokens - small.tokens) / (large.cpu_s - small.cpu_s)


def main() -> int:
    ap = argparse.ArgumentParser(description="memgap's client vs guidellm's: tokens per CPU-second and TTFT error")
    ap.add_argument("--guidellm", default="/tmp/guidellm-venv/bin/guidellm", help="guidellm executable (its own venv)")
    ap.add_argument("--concurrency", type=int, default=64, help="streams for the tokens/CPU-s measurement")
    ap.add_argument("--output-tokens", type=int, default=256)
    ap.add_argument("--requests", type=int, default=128, help="N: runs use N and 4N requests")
    ap.add_argument("--first-token-delay", type=float, default=0.1)
    ap.add_argument("--ttft-streams", default="1,64,512")
    ap.add_argument("--ttft-token-interval", type=float, default=0.05,
                    help="seconds between tokens of a stream in the TTFT part (0.05: 20 tokens/s, engine-like)")
    ap.add_argument("--skip-guidellm", action="store_true", help="measure memgap's client only")
    args = ap.parse_args()

    servers: list[subprocess.Popen[bytes]] = []

    def start_server(interval: float) -> str:
        port = free_port()
        servers.append(subprocess.Popen([sys.executable, str(HERE / "fast_stream_server.py"), "--port", str(port),
                                         "--first-token-delay", str(args.first_token_delay),
                                         "--token-interval", str(interval)], stdout=subprocess.DEVNULL))  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                httpx.get(url + "/health")
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        return url

    try:
        url = start_server(0.0)
        paced_url = start_server(args.ttft_token_interval)
        with tempfile.TemporaryDirectory(prefix="memgap-bench-") as tmp:
            clients: dict[str, Any] = {"memgap": None}
            if not args.skip_guidellm:
                if not Path(args.guidellm).exists():
                    print(f"guidellm not found at {args.guidellm}; see this script's docstring", file=sys.stderr)
                    return 2
                clients["guidellm"] = Guidellm(args.guidellm, Path(tmp))
            env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")

            def measure(name: str, c: int, n: int, out_tokens: int, url: str = url) -> Measured:
                if name == "memgap":
                    m = run_measured(memgap_argv(url, c, n, out_tokens), url, env)
                else:
                    g: Guidellm = clients[name]
                    argv, path = g.argv(url, c, n, out_tokens)
                    m = run_measured(argv, url, env)
                    m.client = g.report(path)
                if m.requests != n or m.tokens != n * out_tokens:
                    print(f"  warning: {name} completed {m.requests} of {n} requests ({m.tokens} tokens)")
                return m

            print(f"fast server: {url}, first-token delay {args.first_token_delay * 1000:.0f} ms; "
                  f"{os.cpu_count()} CPUs; python {sys.version.split()[0]}")  # fmt: skip
            print(f"\n1. streamed tokens per client CPU-second ({args.concurrency} streams, {args.output_tokens} "
                  f"tokens each; runs of {args.requests} and {4 * args.requests} requests, difference)")  # fmt: skip
            rate: dict[str, float] = {}
            for name in clients:
                small = measure(name, args.concurrency, args.requests, args.output_tokens)
                large = measure(name, args.concurrency, 4 * args.requests, args.output_tokens)
                rate[name] = tokens_per_cpu_s(small, large)
                print(f"  {name:<9} {rate[name]:>9.0f} tokens/CPU-s   (N: {small.tokens} tokens, {small.cpu_s:.2f} CPU-s, "
                      f"{small.wall_s:.1f} s wall; 4N: {large.tokens} tokens, {large.cpu_s:.2f} CPU-s, "
                      f"{large.wall_s:.1f} s wall, {large.tokens / large.wall_s:.0f} tokens/s)")  # fmt: skip
            if "guidellm" in rate:
                ratio = rate["memgap"] / rate["guidellm"]
                verdict = "meets" if ratio >= 1.5 else "MISSES"
                print(f"  ratio memgap / guidellm: {ratio:.2f}x tokens per CPU-second ({verdict} the 1.5x target)")

            print(f"\n2. TTFT error (client median - server's true median; true = {args.first_token_delay * 1000:.0f} ms "
                  f"delay + server time; 16 tokens per request, {args.ttft_token_interval * 1000:.0f} ms apart)")  # fmt: skip
            for c in (int(x) for x in args.ttft_streams.split(",")):
                n = max(2 * c, 16)
                for name in clients:
                    m = measure(name, c, n, 16, paced_url)
                    got, true = m.client.get("ttft_p50_s"), m.true_ttft_p50_s
                    if got is None or true is None:
                        print(f"  {c:>4} streams  {name:<9} no TTFT measured ({m.requests} requests)")
                        continue
                    print(f"  {c:>4} streams  {name:<9} measured {got * 1000:8.1f} ms  true {true * 1000:7.1f} ms  "
                          f"error {(got - true) * 1000:+8.1f} ms  ({m.requests} requests)")  # fmt: skip
    finally:
        for server in servers:
            server.terminate()
            server.wait()
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_memgap":
        memgap_client_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        sys.exit(0)
    sys.exit(main())
