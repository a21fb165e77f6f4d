#!/usr/bin/env python3
"""End-of-speech → first-audio latency of `sotto agent`, over spoken questions.

Speaks N questions with espeak-ng (en-us, 160 wpm), joins them with silence long enough for
each answer to play out (the echo guard mutes the microphone while sotto speaks), feeds the
file through `sotto agent --input … --output …` at real-time pace, and reports the median and
p90 of each latency step from the --metrics JSON lines, plus the peak resident memory.

Usage: scripts/measure_agent.py [--gap-s 16] [--sotto target/release/sotto]
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, wave

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


def pct(values, p):
    values = sorted(values)
    k = (len(values) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gap-s", type=float, default=16.0)
    ap.add_argument("--sotto", default="target/release/sotto")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="sotto-measure-")
    parts = []
    for i, q in enumerate(QUESTIONS):
        p = os.path.join(tmp, f"q{i}.wav")
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", p, q], check=True)
        parts.append(p)
    rate = wave.open(parts[0]).getframerate()
    joined = os.path.join(tmp, "questions.wav")
    with wave.open(joined, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        silence = b"\0\0" * int(rate * args.gap_s)
        out.writeframes(b"\0\0" * int(rate * 0.5))
        for p in parts:
            out.writeframes(wave.open(p).readframes(10**9))
            out.writeframes(silence)
    metrics = os.path.join(tmp, "metrics.jsonl")
    cmd = ["/usr/bin/time", "-f", "%M", args.sotto, "agent", "--input", joined,
           "--output", os.path.join(tmp, "replies.wav"), "--metrics", metrics, "--jsonl"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"sotto agent failed:\n{r.stderr}")
    peak_kib = int(r.stderr.strip().splitlines()[-1])
    turns = [json.loads(l) for l in open(metrics)]
    answered = [t for t in turns if t["outcome"] == "answered"]
    print(f"{len(answered)} answered turns of {len(QUESTIONS)} questions; peak RSS {peak_kib / 1024:.0f} MiB")
    for t in answered:
        print(f"  {t['transcript']!r} -> {t['reply'][:60]!r}")
    print(f"{'step (ms after end of speech)':32} {'median':>8} {'p90':>8}")
    for key in ["vad_end_ms", "transcript_ms", "first_token_ms", "first_clause_ms", "first_audio_ms"]:
        v = [t["latency"][key] for t in answered if t["latency"].get(key) is not None]
        print(f"{key:32} {statistics.median(v):8.0f} {pct(v, 0.9):8.0f}")
    print(f"{'stage (ms)':32} {'median':>8} {'p90':>8}")
    for key in ["stt_ms", "llm_prefill_ms", "tts_first_clause_ms"]:
        v = [t["stages"][key] for t in answered if t["stages"].get(key) is not None]
        print(f"{key:32} {statistics.median(v):8.0f} {pct(v, 0.9):8.0f}")


if __name__ == "__main__":
    main()
