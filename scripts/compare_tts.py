#!/usr/bin/env python3
"""Side-by-side: sotto's Piper (piper-rs + ONNX Runtime) vs piper-tts (PyPI) on the same
en_US-joe-medium voice, in one run, for one sentence and a paragraph.

Warm against warm: sotto's voice loaded once (`cargo bench --bench tts -- --serve`), piper-tts's
PiperVoice loaded once; runs alternate. sotto is measured twice: its threads spinning while a
sentence is synthesized (as piper-tts's ONNX Runtime does, and `sotto say` on an idle machine)
and sleeping (as the agent and `serve` do, where the LLM shares the cores, and `sotto say` on a
busy machine). Quiet, then with one
core kept busy by another process (--no-busy skips that). Time to first audio is from the start of synthesis to
the first chunk of samples (sotto: its first clause, as `sotto say` speaks it; piper-tts: its
first sentence, as PiperVoice.synthesize yields it); the real-time factor is synthesis time
over the audio's duration. sotto's audio for the same text is a little shorter where `say` cuts
a clause early for its first audio and closes the seam, so the time each side takes for the
whole text is printed too.

Cold against cold: a fresh process each run, timed from its start: `sotto say --stats -o` (which
reports first audio after process start) against a Python process that imports piper, loads
the voice and synthesizes. Both sides use ONNX Runtime on the CPU with its default threading;
the releases in use are printed.

Usage: python3 scripts/compare_tts.py [--runs R] [--no-busy]      Needs: `pip install piper-tts`.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import ROOT, BenchServer, busy_core, interleave, load, median

SOTTO = ROOT / "target" / "release" / "sotto"
VOICE = ROOT / "models" / "piper-en_US-joe-medium" / "en_US-joe-medium.onnx"
TEXTS = {
    "sentence": "The quick brown fox jumps over the lazy dog near the river bank.",
    "paragraph": ("Good morning, and welcome to the weekly meeting. The new office opens next month, "
                  "and every team will move in over two weekends. Please pack your desks on Friday. "
                  "Thank you all for your hard work this quarter."),
}
STATS = re.compile(r"first audio (\d+) ms after start")

# A cold piper-tts run: timed from the interpreter's start (time.perf_counter at the top of the
# script is as close as Python gets), import and voice load included, like sotto's process.
COLD_PY = r"""
import time, sys, json
t0 = time.perf_counter()
from piper import PiperVoice
voice = PiperVoice.load(sys.argv[1], config_path=sys.argv[1] + ".json")
first, samples = None, 0
for chunk in voice.synthesize(sys.argv[2]):
    first = first or time.perf_counter() - t0
    samples += len(chunk.audio_float_array)
print(json.dumps({"first_audio_s": first, "total_s": time.perf_counter() - t0}))
"""


def warm(servers: dict[str, BenchServer], voice, runs: int, label: str) -> None:
    rate = voice.config.sample_rate
    print(f"\nwarm against warm, {label} (median of {runs} interleaved runs): {load()}")
    print(f"{'text':<10} {'sotto':<6} {'sotto TTFA ms':>14} {'piper-tts TTFA ms':>18} {'ratio':>6} "
          f"{'sotto RTF':>10} {'piper-tts RTF':>14} {'ratio':>6} {'sotto ms':>9} {'piper-tts ms':>13} "
          f"{'ratio':>6}")
    for name, text in TEXTS.items():
        def sotto():
            answers = {}
            for mode, server in servers.items():
                r = server.run({"text": text})
                answers[mode] = (r["first_audio_s"], r["total_s"] / r["audio_s"], r["total_s"])
            return answers

        def reference():
            import time
            t0 = time.perf_counter()
            first, samples = None, 0
            for chunk in voice.synthesize(text):
                first = first or time.perf_counter() - t0
                samples += len(chunk.audio_float_array)
            total = time.perf_counter() - t0
            return first, total / (samples / rate), total

        s, p = interleave(sotto, reference, runs)
        p_ttfa, p_rtf = median(x[0] for x in p) * 1000, median(x[1] for x in p)
        p_ms = median(x[2] for x in p) * 1000
        for mode in servers:
            s_ttfa = median(x[mode][0] for x in s) * 1000
            s_rtf = median(x[mode][1] for x in s)
            s_ms = median(x[mode][2] for x in s) * 1000
            print(f"{name:<10} {mode:<6} {s_ttfa:>14.0f} {p_ttfa:>18.0f} {p_ttfa / s_ttfa:>6.2f} "
                  f"{s_rtf:>10.3f} {p_rtf:>14.3f} {p_rtf / s_rtf:>6.2f} {s_ms:>9.0f} {p_ms:>13.0f} "
                  f"{p_ms / s_ms:>6.2f}")
    print(f"{load()} (after); ratios are piper-tts / sotto (> 1: sotto faster); `sotto say` "
          f"spins on an idle machine and sleeps on a busy one; the agent and serve sleep")


def cold(runs: int) -> None:
    print(f"\ncold against cold (fresh processes, from process start; median of {runs}): {load()}")
    print(f"{'text':<10} {'sotto TTFA ms':>14} {'piper-tts TTFA ms':>18} {'ratio':>6} "
          f"{'sotto total ms':>15} {'piper-tts total ms':>19} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "s.wav"
        for name, text in TEXTS.items():
            def sotto():
                import time
                t0 = time.perf_counter()
                r = subprocess.run([str(SOTTO), "say", "--stats", "--force", "-o", str(out), text],
                                   check=True, capture_output=True, text=True)
                total = time.perf_counter() - t0
                m = STATS.search(r.stderr)
                if not m:
                    raise SystemExit(f"no stats from sotto:\n{r.stderr}")
                return float(m[1]) / 1000, total

            def reference():
                import time
                t0 = time.perf_counter()
                r = subprocess.run([sys.executable, "-c", COLD_PY, str(VOICE), text], check=True,
                                   capture_output=True, text=True)
                total = time.perf_counter() - t0
                return json.loads(r.stdout)["first_audio_s"], total

            s, p = interleave(sotto, reference, runs)
            s_ttfa, p_ttfa = median(x[0] for x in s) * 1000, median(x[0] for x in p) * 1000
            s_tot, p_tot = median(x[1] for x in s) * 1000, median(x[1] for x in p) * 1000
            print(f"{name:<10} {s_ttfa:>14.0f} {p_ttfa:>18.0f} {p_ttfa / s_ttfa:>6.2f} "
                  f"{s_tot:>15.0f} {p_tot:>19.0f} {p_tot / s_tot:>6.2f}")
    print(f"{load()} (after)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--no-busy", action="store_true", help="skip the run with one core busy")
    args = ap.parse_args()
    import onnxruntime
    from piper import PiperVoice  # noqa: late import so --help works without it

    sotto_ort = sorted(p.name for p in (ROOT / "models" / "onnxruntime").glob("libonnxruntime*"))
    print(f"ONNX Runtime: piper-tts uses onnxruntime {onnxruntime.__version__} (PyPI); "
          f"sotto loads {sotto_ort[-1] if sotto_ort else '?'} from models/onnxruntime")
    voice = PiperVoice.load(str(VOICE), config_path=str(VOICE) + ".json")
    servers = {"spin": BenchServer("tts", 0),
               "sleep": BenchServer("tts", 0, {"SOTTO_BENCH_TTS_WAITING": "sleep"})}
    try:
        warm(servers, voice, args.runs, "quiet")
        if not args.no_busy:
            with busy_core():
                warm(servers, voice, args.runs, "one core busy")
    finally:
        for server in servers.values():
            server.close()
    cold(args.runs)


if __name__ == "__main__":
    main()
