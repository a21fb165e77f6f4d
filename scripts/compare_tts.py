#!/usr/bin/env python3
"""Side-by-side: sotto's Piper (piper-rs + ONNX Runtime) vs piper-tts (PyPI) on the same
en_US-joe-medium voice, in one run.

For one sentence and for a paragraph: time to first audio (synthesis start → first chunk of
samples) and real-time factor (synthesis time / audio duration), voice load excluded.
sotto's figures come from `sotto say --stats -o FILE` (its clause chunker sends the first
clause to the voice on its own); piper-tts's from iterating PiperVoice.synthesize (one chunk
per sentence). Both use ONNX Runtime on the CPU with its default threading.

Usage: python3 scripts/compare_tts.py [--runs R]      Needs: `pip install piper-tts`.
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOTTO = ROOT / "target" / "release" / "sotto"
VOICE = ROOT / "models" / "piper-en_US-joe-medium" / "en_US-joe-medium.onnx"
TEXTS = {
    "sentence": "The quick brown fox jumps over the lazy dog near the river bank.",
    "paragraph": ("Good morning, and welcome to the weekly meeting. The new office opens next month, "
                  "and every team will move in over two weekends. Please pack your desks on Friday. "
                  "Thank you all for your hard work this quarter."),
}
STATS = re.compile(r"first audio after (\d+) ms; ([\d.]+) s of speech synthesized in (\d+) ms")


def sotto_once(text: str, out: Path) -> tuple[float, float]:
    r = subprocess.run([str(SOTTO), "say", "--stats", "--force", "-o", str(out), text],
                       check=True, capture_output=True, text=True)
    m = STATS.search(r.stderr)
    if not m:
        raise SystemExit(f"no stats from sotto:\n{r.stderr}")
    return float(m[1]), float(m[3]) / 1000 / float(m[2])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    from piper import PiperVoice  # noqa: late import so --help works without it

    voice = PiperVoice.load(str(VOICE), config_path=str(VOICE) + ".json")
    rate = voice.config.sample_rate
    print(f"median of {args.runs} runs, voice load excluded")
    print(f"{'text':<10} {'sotto TTFA ms':>14} {'piper-tts TTFA ms':>18} {'sotto RTF':>10} "
          f"{'piper-tts RTF':>14} {'RTF ratio p/s':>14}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in TEXTS.items():
            s = [sotto_once(text, Path(tmp) / "s.wav") for _ in range(args.runs)]
            ttfa, rtf = [], []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                first, samples = None, 0
                for chunk in voice.synthesize(text):
                    first = first or time.perf_counter() - t0
                    samples += len(chunk.audio_float_array)
                total = time.perf_counter() - t0
                ttfa.append(first * 1000)
                rtf.append(total / (samples / rate))
            s_ttfa = statistics.median(x[0] for x in s)
            s_rtf = statistics.median(x[1] for x in s)
            p_ttfa, p_rtf = statistics.median(ttfa), statistics.median(rtf)
            print(f"{name:<10} {s_ttfa:>14.0f} {p_ttfa:>18.0f} {s_rtf:>10.3f} {p_rtf:>14.3f} "
                  f"{p_rtf / s_rtf:>14.2f}")


if __name__ == "__main__":
    main()
