#!/usr/bin/env python3
"""Side-by-side: sotto agent vs a Python pipeline of the tools users would otherwise pick
(faster-whisper → llama-cpp-python → piper-tts), same models, same thread count, one run.

Speaks twelve questions with espeak-ng (en-us, 160 wpm). sotto hears them joined with silence
long enough for each answer to play out (the echo guard mutes the microphone while it
speaks), through `sotto agent --input … --output … --metrics` at real-time pace; its figures
come from the metrics, measured from the last word (the utterance's last voiced frame): they
include end-pointing (a pause judged complete, or the full hangover). The Python pipeline gets
each question already cut out and runs transcribe → stream the reply until its first clause →
synthesize that clause, one after another, as a straightforward script would: its figures
start when its input ends and include no end-pointing at all (add a VAD's hangover for a live
microphone). Also reports how sotto's speculation went, and its peak resident memory.

Usage: scripts/compare_agent.py [--threads 2] [--gap-s 20] [--sotto-only]
Needs (unless --sotto-only): pip install faster-whisper llama-cpp-python piper-tts
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile
import time
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOTTO = ROOT / "target" / "release" / "sotto"
CT2_DIR = ROOT / "models" / "whisper-tiny.en-ct2"
GGUF = ROOT / "models" / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"
VOICE = ROOT / "models" / "piper-en_US-joe-medium" / "en_US-joe-medium.onnx"
SYSTEM = "You are a helpful assistant. Answer in one short sentence."  # sotto's default

QUESTIONS = [
    "What is the capital of France?",
    "How many days are there in a week?",
    "What colour is the sky on a clear day?",
    "Who wrote Romeo and Juliet?",
    "What is the largest planet in the solar system?",
    "How many legs does a spider have?",
    "What is the boiling point of water?",
    "Which ocean is the largest?",
    "What do bees make?",
    "What is the opposite of hot?",
    "How many continents are there?",
    "What language is spoken in Spain?",
]
# sotto's chunker: the first clause ends at , ; : after 3 words, or at a sentence end.
FIRST_CLAUSE = re.compile(r"^(\S+\s+){2,}\S*[,;:](\s|$)|^.*?[.!?](\s|$)")


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def speak(tmp: Path) -> list[Path]:
    parts = []
    for i, q in enumerate(QUESTIONS):
        p = tmp / f"q{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(p), q], check=True)
        parts.append(p)
    return parts


def run_sotto(parts: list[Path], tmp: Path, gap_s: float, threads: int) -> tuple[list[dict], int]:
    rate = wave.open(str(parts[0])).getframerate()
    joined = tmp / "questions.wav"
    with wave.open(str(joined), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\0\0" * int(rate * 0.5))
        for p in parts:
            out.writeframes(wave.open(str(p)).readframes(10**9))
            out.writeframes(b"\0\0" * int(rate * gap_s))
    metrics = tmp / "metrics.jsonl"
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    r = subprocess.run(["/usr/bin/time", "-f", "%M", str(SOTTO), "agent", "--input", str(joined),
                        "--threads", str(threads), "--output", str(tmp / "replies.wav"),
                        "--metrics", str(metrics), "--action-log", str(tmp / "actions.jsonl"),
                        "--jsonl"], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"sotto agent failed:\n{r.stderr}")
    peak_kib = int(r.stderr.strip().splitlines()[-1])
    for line in r.stderr.splitlines():
        if line.startswith("speculation: "):
            (tmp / "speculation.json").write_text(line[len("speculation: "):])
    return [json.loads(line) for line in metrics.open()], peak_kib


def run_python(parts: list[Path], threads: int) -> list[dict]:
    from faster_whisper import WhisperModel  # noqa: late imports so --help works without them
    from llama_cpp import Llama
    from piper import PiperVoice

    fw = WhisperModel(str(CT2_DIR), device="cpu", compute_type="default", cpu_threads=threads)
    llm = Llama(model_path=str(GGUF), n_threads=threads, n_threads_batch=threads, n_ctx=2048,
                verbose=False)
    voice = PiperVoice.load(str(VOICE), config_path=str(VOICE) + ".json")
    # Warm every stage once, as sotto does at start-up.
    list(fw.transcribe(str(parts[0]), beam_size=1, language="en")[0])
    llm.create_chat_completion([{"role": "user", "content": "Hi"}], max_tokens=2)
    next(iter(voice.synthesize("Ready.")))
    turns = []
    for p in parts:
        t0 = time.perf_counter()
        ms = lambda: (time.perf_counter() - t0) * 1000  # noqa: E731
        segments, _ = fw.transcribe(str(p), beam_size=1, language="en",
                                    without_timestamps=True)
        text = " ".join(s.text.strip() for s in segments)
        t_text = ms()
        reply, t_token, clause = "", None, None
        stream = llm.create_chat_completion(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
            temperature=0.2, top_p=0.9, max_tokens=96, stream=True)
        for chunk in stream:
            piece = chunk["choices"][0]["delta"].get("content", "")
            if not piece:
                continue
            t_token = t_token or ms()
            reply += piece
            m = FIRST_CLAUSE.match(reply)
            if m:
                clause = m.group(0).strip()
                break
        t_clause = ms()
        clause = clause or reply.strip()
        next(iter(voice.synthesize(clause)))
        turns.append({"transcript": text, "clause": clause, "transcript_ms": t_text,
                      "first_token_ms": t_token, "first_clause_ms": t_clause,
                      "first_audio_ms": ms()})
    return turns


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--gap-s", type=float, default=20.0)
    ap.add_argument("--sotto-only", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sotto-compare-") as tmp:
        tmp = Path(tmp)
        parts = speak(tmp)
        s_turns, peak_kib = run_sotto(parts, tmp, args.gap_s, args.threads)
        answered = [t for t in s_turns if t["outcome"] == "answered"]
        print(f"sotto: {len(answered)} of {len(QUESTIONS)} questions answered; "
              f"peak RSS {peak_kib / 1024:.0f} MiB; {args.threads} threads")
        for t in answered:
            print(f"  {t['transcript']!r} -> {t['reply'][:70]!r}")
        # sotto: from the last word (end-pointing included).
        rel = lambda t, k: t["latency"][k]  # noqa: E731
        keys = ["vad_end_ms", "transcript_ms", "first_token_ms", "first_clause_ms", "first_audio_ms"]
        p_turns = [] if args.sotto_only else run_python(parts, args.threads)
        print("\nms: sotto from the last word (end-pointing included); python from the end of its "
              "already cut input (no end-pointing)")
        print(f"{'step':18} {'sotto median':>13} {'p90':>6} {'python median':>14} {'p90':>6} "
              f"{'ratio':>6}")
        for k in keys:
            s = [rel(t, k) for t in answered if t["latency"].get(k) is not None]
            line = f"{k:18} {statistics.median(s):13.0f} {pct(s, 0.9):6.0f}"
            if p_turns and k in p_turns[0]:
                p = [t[k] for t in p_turns if t[k] is not None]
                line += (f" {statistics.median(p):14.0f} {pct(p, 0.9):6.0f}"
                         f" {statistics.median(p) / statistics.median(s):6.2f}")
            print(line)
        print("ratio = python / sotto (above 1: sotto is faster)")
        if len(answered) >= 10:
            print("first turn vs tenth turn, sotto, ms after end-pointing: " + ", ".join(
                f"{k} {rel(answered[0], k):.0f} vs {rel(answered[9], k):.0f}" for k in keys
                if answered[0]["latency"].get(k) is not None
                and answered[9]["latency"].get(k) is not None))
        spec = json.loads((tmp / "speculation.json").read_text()) if (tmp / "speculation.json").exists() else None
        if spec:
            print(f"speculation: {spec}")
        print(f"\nsotto stages (ms)  {'median':>8} {'p90':>6}")
        for k in ["stt_ms", "llm_prefill_ms", "tts_first_clause_ms"]:
            v = [t["stages"][k] for t in answered if t["stages"].get(k) is not None]
            print(f"{k:18} {statistics.median(v):8.0f} {pct(v, 0.9):6.0f}")
        if p_turns:
            print("\npython transcripts:")
            for t in p_turns:
                print(f"  {t['transcript']!r} -> {t['clause']!r}")


if __name__ == "__main__":
    main()
