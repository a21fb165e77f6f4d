#!/usr/bin/env python3
"""Side-by-side: sotto's LLM vs llama.cpp (llama-cpp-python) on the same SmolLM2-135M-Instruct
Q4_1 GGUF, the same 43 prompt tokens and the same thread count, in one run.

Both sides are warm (sotto: `cargo bench --bench llm -- --serve`, the model loaded once; llama.cpp:
one Llama object) and run alternately, run by run. Each run prefills the prompt from an empty
cache and decodes greedily (no repetition penalty on either side) as many tokens as sotto
produced. Reports median tokens/s and the ratio, quiet and with one core kept busy by another
process, plus both perplexities on tests/fixtures/text/perplexity.txt (--perplexity).

Usage: python3 scripts/compare_llm.py [--threads N] [--tokens N] [--runs R] [--no-busy] [--perplexity]
Needs: `pip install llama-cpp-python numpy` (builds llama.cpp from source) in the Python running it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import time

from benchlib import ROOT, BenchServer, busy_core, interleave, load, median

GGUF = ROOT / "models" / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"
TEXT = ROOT / "tests" / "fixtures" / "text" / "perplexity.txt"
PROMPT = "Explain in a few sentences why the sky is blue and why sunsets are red."
# sotto's default system prompt (src/llm/mod.rs DEFAULT_SYSTEM_PROMPT), so both run the same tokens.
CHATML = ("<|im_start|>system\nYou are a helpful assistant. Answer in one short sentence."
          "<|im_end|>\n<|im_start|>user\n{p}<|im_end|>\n<|im_start|>assistant\n")


def compare(server: BenchServer, llm, toks, args, label: str) -> None:
    def sotto():
        r = server.run({"prompt": PROMPT, "tokens": args.tokens})
        return r["prompt_tokens"] / r["prefill_s"], r["tokens"] / r["decode_s"], r["tokens"]

    n_gen = server.run({"prompt": PROMPT, "tokens": args.tokens})["tokens"]

    def reference():
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(toks)
        pre = len(toks) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(n_gen):
            t = llm.sample(temp=0.0, repeat_penalty=1.0)
            llm.eval([t])
        return pre, n_gen / (time.perf_counter() - t0)

    print(f"\n{label}: {load()}")
    s, l = interleave(sotto, reference, args.runs)
    print(f"{load()} (after)")
    s_pre, s_dec = median(r[0] for r in s), median(r[1] for r in s)
    l_pre, l_dec = median(r[0] for r in l), median(r[1] for r in l)
    print(f"threads {args.threads}; prompt {len(toks)} tokens; {n_gen} generated tokens; "
          f"median of {args.runs} interleaved runs")
    print(f"{'':<10} {'sotto tok/s':>12} {'llama.cpp tok/s':>16} {'sotto/llama.cpp':>16}")
    print(f"{'prefill':<10} {s_pre:>12.1f} {l_pre:>16.1f} {s_pre / l_pre:>16.2f}")
    print(f"{'decode':<10} {s_dec:>12.1f} {l_dec:>16.1f} {s_dec / l_dec:>16.2f}")


def perplexity(llm) -> None:
    import numpy as np
    sotto = json.loads(subprocess.run(
        [str(ROOT / "target" / "release" / "sotto"), "chat", "--perplexity", str(TEXT)],
        check=True, capture_output=True, text=True).stdout)
    toks = llm.tokenize(TEXT.read_text().encode(), add_bos=False, special=False)
    nll, n = 0.0, 0
    for s in range(0, len(toks), 512):
        chunk = toks[s:s + 512]
        if len(chunk) < 2:
            continue
        llm.reset()
        llm.eval(chunk)
        lg = np.array(llm.scores[:len(chunk)], dtype=np.float64)
        for t in range(1, len(chunk)):
            row = lg[t - 1]
            m = row.max()
            nll += np.log(np.exp(row - m).sum()) + m - row[chunk[t]]
            n += 1
    print(f"\nperplexity on {TEXT.name} (512-token windows): sotto {sotto['value']:.3f} "
          f"({sotto['tokens']} tokens), llama.cpp {float(np.exp(nll / n)):.3f} ({n} tokens)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--no-busy", action="store_true", help="skip the one-core-busy comparison")
    ap.add_argument("--perplexity", action="store_true")
    args = ap.parse_args()
    import llama_cpp  # noqa: late import so --help works without it

    llm = llama_cpp.Llama(model_path=str(GGUF), n_threads=args.threads,
                          n_threads_batch=args.threads, n_ctx=2048, verbose=False,
                          logits_all=args.perplexity)
    print(f"llama.cpp via llama-cpp-python {llama_cpp.__version__}, {GGUF.name}")
    toks = llm.tokenize(CHATML.format(p=PROMPT).encode(), add_bos=False, special=True)
    server = BenchServer("llm", args.threads)
    try:
        compare(server, llm, toks, args, "quiet")
        if not args.no_busy:
            with busy_core():
                compare(server, llm, toks, args, "one core busy")
    finally:
        server.close()
    if args.perplexity:
        perplexity(llm)


if __name__ == "__main__":
    main()
