"""Shared helpers of the side-by-side comparison scripts (compare_llm, compare_stt, compare_tts).

- `bench_server(name)`: builds `cargo bench --bench NAME` and starts it in `--serve` mode: the
  engine is loaded once and each request line gets one measured run, so sotto is compared warm
  against a warm reference, run by run.
- `interleave(a, b, runs)`: A, B, A, B… (the machine is shared and noisy: load hits both sides).
- `busy_core()`: keeps one core busy with another process while a block runs (the "one core
  busy" figures).
- `load()`: the 1-minute load average, printed before and after each comparison.
"""
from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f}"


def bench_executable(name: str) -> str:
    """Builds the bench (release, optimised) and returns its executable's path."""
    out = subprocess.run(
        ["cargo", "bench", "--bench", name, "--no-run", "--message-format=json", "--locked"],
        cwd=ROOT, check=True, capture_output=True, text=True)
    for line in out.stdout.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") \
                and msg["target"]["name"] == name:
            return msg["executable"]
    raise SystemExit(f"cargo did not report the {name} bench executable")


class BenchServer:
    """A `cargo bench --bench NAME -- --serve` process: one JSON request, one JSON answer."""

    def __init__(self, name: str, threads: int, extra_env: dict | None = None):
        env = dict(os.environ, SOTTO_BENCH_THREADS=str(threads), **(extra_env or {}))
        self.proc = subprocess.Popen([bench_executable(name), "--serve"], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, request: dict) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("the sotto bench server exited")
        answer = json.loads(line)
        if "error" in answer:
            raise SystemExit(f"sotto bench server: {answer['error']}")
        return answer

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def interleave(sotto, reference, runs: int, warmup: int = 1, settle: float = 0.1):
    """Calls sotto(), reference(), sotto(), reference()… and returns both lists of results
    (after `warmup` unrecorded rounds). Between calls it sleeps `settle` seconds: thread pools
    that spin after their work (ONNX Runtime's, whisper.cpp's, CTranslate2's) would otherwise
    take the cores from whichever side runs next."""
    import time
    a, b = [], []
    for i in range(warmup + runs):
        ra = sotto()
        time.sleep(settle)
        rb = reference()
        time.sleep(settle)
        if i >= warmup:
            a.append(ra)
            b.append(rb)
    return a, b


def median(xs) -> float:
    return statistics.median(xs)


@contextlib.contextmanager
def busy_core(enabled: bool = True):
    """One other process spinning on a core for the duration of the block."""
    if not enabled:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        proc.kill()
        proc.wait()
