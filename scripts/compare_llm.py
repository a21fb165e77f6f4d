#!/usr/bin/env python3
"""Side-by-side: sotto's LLM (candle, quantized llama) vs llama.cpp (llama-cpp-python) on the
same SmolLM2-135M-Instruct Q4_1 GGUF, the same prompt and thread count, in one run.

Reports prefill and decode tokens/s for each and the ratio. sotto's figures come from
`sotto chat --stats` (model load excluded); llama.cpp's from timing eval() of the same prompt
tokens, then greedy decoding of the same number of tokens sotto produced.

Usage: python3 scripts/compare_llm.py [--threads N] [--tokens N] [--runs R]
Needs: `pip install llama-cpp-python` (builds llama.cpp from source) in the Python running it.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOTTO = ROOT / "target" / "release" / "sotto"
GGUF = ROOT / "models" / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "Explain in a few sentences why the sky is blue and why sunsets are red."
# sotto's default system prompt (src/llm.rs DEFAULT_SYSTEM_PROMPT), so both run the same tokens.
CHATML = ("<|im_start|>system\nYou are a helpful assistant. Answer in one short sentence."
          "<|im_end|>\n<|im_start|>user\n{p}<|im_end|>\n<|im_start|>assistant\n")
STATS = re.compile(r"\[(\d+) prompt tokens \((\d+) run\) in (\d+) ms = [\d.]+ tok/s; (\d+) tokens in (\d+) ms")


def sotto_once(threads: int, tokens: int) -> tuple[float, float, int, int]:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run([str(SOTTO), "chat", "--temperature", "0", "--max-tokens", str(tokens),
                          "--stats", PROMPT], check=True, capture_output=True, text=True, env=env)
    m = STATS.search(out.stderr)
    if not m:
        raise SystemExit(f"no stats in sotto's output:\n{out.stderr}")
    prompt_run, prefill_ms, n, decode_ms = int(m[2]), int(m[3]), int(m[4]), int(m[5])
    return prompt_run / (prefill_ms / 1000), n / (decode_ms / 1000), prompt_run, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    from llama_cpp import Llama  # noqa: late import so --help works without it

    s_runs = [sotto_once(args.threads, args.tokens) for _ in range(args.runs)]
    s_pre = statistics.median(r[0] for r in s_runs)
    s_dec = statistics.median(r[1] for r in s_runs)
    n_prompt, n_gen = s_runs[0][2], s_runs[0][3]

    llm = Llama(model_path=str(GGUF), n_threads=args.threads, n_threads_batch=args.threads,
                n_ctx=2048, verbose=False)
    toks = llm.tokenize(CHATML.format(p=PROMPT).encode(), add_bos=False, special=True)
    pre, dec = [], []
    for _ in range(args.runs):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(toks)
        pre.append(len(toks) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for _ in range(n_gen):
            t = llm.sample(temp=0.0)
            llm.eval([t])
        dec.append(n_gen / (time.perf_counter() - t0))
    l_pre, l_dec = statistics.median(pre), statistics.median(dec)
    print(f"threads {args.threads}; prompt {n_prompt} tokens (llama.cpp: {len(toks)}); "
          f"{n_gen} generated tokens; median of {args.runs} runs")
    print(f"{'':<10} {'sotto tok/s':>12} {'llama.cpp tok/s':>16} {'sotto/llama.cpp':>16}")
    print(f"{'prefill':<10} {s_pre:>12.1f} {l_pre:>16.1f} {s_pre / l_pre:>16.2f}")
    print(f"{'decode':<10} {s_dec:>12.1f} {l_dec:>16.1f} {s_dec / l_dec:>16.2f}")


if __name__ == "__main__":
    main()
