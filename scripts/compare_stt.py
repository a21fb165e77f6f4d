#!/usr/bin/env python3
"""Side-by-side: sotto (whisper.cpp via whisper-rs) vs faster-whisper on the same Whisper tiny.en
weights, thread count and beam size, in one run.

faster-whisper reads the fetched CTranslate2 directory (models/whisper-tiny.en-ct2); sotto reads
the whisper.cpp file converted from it. Inputs: assets/jfk.wav (11 s) and a 60 s espeak-ng
recording made here. Each measurement is the median of --runs runs of transcription alone
(model already loaded); model load times are reported separately. sotto runs with
--policy open-weight: Whisper tiny.en is open-weight, admitted explicitly for this comparison.

Usage: python3 scripts/compare_stt.py [--threads N] [--beam-size B] [--runs R]
Needs: `pip install faster-whisper` in the Python that runs this; espeak-ng and sox.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOTTO = ROOT / "target" / "release" / "sotto"
CT2_DIR = ROOT / "models" / "whisper-tiny.en-ct2"

LONG_TEXT = (
    "Good morning everyone, and thank you for joining the weekly planning meeting. "
    "First, the new office on the second floor will open next month, and every team will "
    "move in over two weekends. Please pack your desks on Friday afternoon and label every box "
    "with your name and your team. Second, the quarterly report is almost finished. The sales "
    "numbers are better than last year, and the support team answered most questions within a "
    "day. Third, we are looking for volunteers to organise the summer party. If you would like "
    "to help, send a short message to the office manager before the end of the week. Finally, "
    "remember that the kitchen will be closed on Monday for cleaning, so bring your own lunch "
    "or try one of the small restaurants near the station. That is all for today. "
)


def make_60s(path: Path) -> None:
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(raw), LONG_TEXT * 2], check=True)
    subprocess.run(["sox", str(raw), "-r", "16000", str(path), "trim", "0", "60"], check=True)
    raw.unlink()


def sotto_run(wav: Path, threads: int, beam: int, runs: int) -> tuple[float, float, str]:
    """Median transcription ms (sotto's own json timing, load excluded) and median process
    wall ms (load included)."""
    inner, wall, text = [], [], ""
    for _ in range(runs):
        t0 = time.perf_counter()
        out = subprocess.run(
            [str(SOTTO), "--policy", "open-weight", "transcribe", "--format", "json", "--threads", str(threads),
             "--beam-size", str(beam), str(wav)],
            check=True, capture_output=True, text=True,
        )
        wall.append((time.perf_counter() - t0) * 1000)
        doc = json.loads(out.stdout)
        inner.append(doc["transcribe_ms"])
        text = doc["text"]
    return statistics.median(inner), statistics.median(wall), text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--beam-size", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    from faster_whisper import WhisperModel  # noqa: imported late so --help works without it

    with tempfile.TemporaryDirectory() as tmp:
        long = Path(tmp) / "espeak60.wav"
        make_60s(long)
        inputs = [("jfk.wav (11 s)", ROOT / "assets" / "jfk.wav"), ("espeak 60 s", long)]

        t0 = time.perf_counter()
        fw = WhisperModel(str(CT2_DIR), device="cpu", compute_type="default",
                          cpu_threads=args.threads, num_workers=1)
        fw_load_ms = (time.perf_counter() - t0) * 1000

        print(f"threads {args.threads}, beam size {args.beam_size}, median of {args.runs} runs, "
              f"model load excluded")
        print(f"faster-whisper model load: {fw_load_ms:.0f} ms")
        print(f"{'input':<16} {'sotto ms':>9} {'faster-whisper ms':>18} {'ratio fw/sotto':>15}"
              f" {'sotto wall ms (incl. load)':>27}")
        for name, wav in inputs:
            s_ms, s_wall, s_text = sotto_run(wav, args.threads, args.beam_size, args.runs)
            times, fw_text = [], ""
            for _ in range(args.runs):
                t0 = time.perf_counter()
                segments, _ = fw.transcribe(str(wav), beam_size=args.beam_size, language="en",
                                            vad_filter=False, condition_on_previous_text=True)
                fw_text = " ".join(s.text.strip() for s in segments)
                times.append((time.perf_counter() - t0) * 1000)
            f_ms = statistics.median(times)
            print(f"{name:<16} {s_ms:>9.0f} {f_ms:>18.0f} {f_ms / s_ms:>15.2f} {s_wall:>27.0f}")
            print(f"  sotto:          {s_text[:100]}")
            print(f"  faster-whisper: {fw_text[:100]}")


if __name__ == "__main__":
    main()
