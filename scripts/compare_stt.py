#!/usr/bin/env python3
"""Side-by-side: sotto (whisper.cpp via whisper-rs) vs faster-whisper on the same Whisper tiny.en
weights, thread count and beam size, in one run.

faster-whisper reads the fetched CTranslate2 directory (models/whisper-tiny.en-ct2) with each
CPU compute type it offers here (float32 and int8 by default); sotto reads the whisper.cpp file
converted from it. Inputs: assets/jfk.wav (11 s) and a 60 s espeak-ng recording made here. Both
sides are warm (sotto: `cargo bench --bench transcribe -- --serve`, the model loaded once;
faster-whisper: one WhisperModel per compute type) and run alternately, run by run; medians of
--runs, greedy and beam 5, quiet and with one core kept busy by another process.

A model brought by the user is compared the same way: `--stt-model NAME --ct2-dir DIR`, NAME
added with `sotto models add DIR --name NAME` from the CTranslate2 directory DIR
faster-whisper reads, e.g. the multilingual base `scripts/setup --with-multilingual` fetches.

Usage: python3 scripts/compare_stt.py [--threads N] [--runs R] [--no-busy] [--compute-types float32,int8]
                                      [--stt-model NAME --ct2-dir DIR]
Needs: `pip install faster-whisper` in the Python that runs this; espeak-ng and sox.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

from benchlib import ROOT, BenchServer, busy_core, interleave, load, median

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
    """LONG_TEXT spoken by espeak-ng, brought to exactly 60 s by sox's tempo (pitch kept), so
    the whole text is in the audio and is the WER reference. Without dither (-D): sox's random
    dither made every run's file, and so its transcripts, a little different."""
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(raw), LONG_TEXT], check=True)
    secs = float(subprocess.run(["soxi", "-D", str(raw)], check=True, capture_output=True,
                                text=True).stdout)
    subprocess.run(["sox", "-D", str(raw), "-r", "16000", str(path), "tempo", "-s", f"{secs / 60:.5f}",
                    "trim", "0", "60"], check=True)
    raw.unlink()


def words(text: str) -> list[str]:
    return "".join(c.lower() if c.isalnum() or c.isspace() else " " for c in text).split()


def wer(ref: str, hyp: str) -> float:
    r, h = words(ref), words(hyp)
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
            prev, d[j] = d[j], cur
    return d[len(h)] / max(len(r), 1)


def compare(server, models, inputs, args, label):
    print(f"\n{label}: {load()}")
    print(f"{'input':<14} {'beam':>4} {'thr':>4} {'sotto ms':>9} " +
          " ".join(f"{'fw ' + ct + ' ms':>16} {'ratio':>6}" for ct in models) +
          "   WER sotto / fw")
    for name, wav, ref in inputs:
        for beam in (1, 5):
            def sotto():
                r = server.run({"wav": str(wav), "beam": beam})
                return r["seconds"] * 1000, r["text"], r["threads"]

            row, texts, used = [], {}, set()
            for ct, fw in models.items():
                def reference(fw=fw):
                    t0 = time.perf_counter()
                    segments, _ = fw.transcribe(str(wav), beam_size=beam, language="en",
                                                vad_filter=False, condition_on_previous_text=True)
                    text = " ".join(s.text.strip() for s in segments)
                    return (time.perf_counter() - t0) * 1000, text

                s, f = interleave(sotto, reference, args.runs)
                s_ms, f_ms = median(r[0] for r in s), median(r[0] for r in f)
                row.append((s_ms, f_ms))
                texts[ct] = f[-1][1]
                s_text = s[-1][1]
                used.update(r[2] for r in s)
            s_ms = median(r[0] for r in row)
            cells = " ".join(f"{f_ms:>16.0f} {f_ms / s_ms:>6.2f}" for _, f_ms in row)
            wers = " / ".join(f"{wer(ref, t):.3f}" for t in [s_text, *texts.values()])
            thr = "-".join(str(t) for t in sorted(used))
            print(f"{name:<14} {beam:>4} {thr:>4} {s_ms:>9.0f} {cells}   {wers}")
    print(f"{load()} (after); ratio = faster-whisper time / sotto time (> 1: sotto faster); "
          f"thr = the threads sotto's runs took (fewer than asked while other programs ran)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-busy", action="store_true")
    ap.add_argument("--compute-types", default="float32,int8")
    ap.add_argument("--stt-model", help="a Whisper model added with `sotto models add`")
    ap.add_argument("--ct2-dir", type=Path, default=CT2_DIR,
                    help="the CTranslate2 directory faster-whisper reads (the same weights)")
    args = ap.parse_args()
    if args.stt_model and args.ct2_dir == CT2_DIR:
        ap.error("--stt-model needs --ct2-dir: the CTranslate2 directory it was added from")

    import faster_whisper  # noqa: imported late so --help works without it
    import ctranslate2

    with tempfile.TemporaryDirectory() as tmp:
        long = Path(tmp) / "espeak60.wav"
        make_60s(long)
        jfk_ref = (ROOT.parent / "shared" / "fixtures" / "jfk.txt")
        jfk_ref = jfk_ref.read_text() if jfk_ref.exists() else ""
        inputs = [("jfk.wav 11 s", ROOT / "assets" / "jfk.wav", jfk_ref),
                  ("espeak 60 s", long, LONG_TEXT)]
        models = {ct: faster_whisper.WhisperModel(str(args.ct2_dir), device="cpu", compute_type=ct,
                                                  cpu_threads=args.threads, num_workers=1)
                  for ct in args.compute_types.split(",")}
        print(f"faster-whisper {faster_whisper.__version__} (CTranslate2 {ctranslate2.__version__}); "
              f"threads {args.threads}; median of {args.runs} interleaved runs, warm; "
              f"model {args.stt_model or 'whisper-tiny.en'} ({args.ct2_dir.name})")
        extra = {"SOTTO_BENCH_STT": args.stt_model} if args.stt_model else None
        server = BenchServer("transcribe", args.threads, extra)
        try:
            compare(server, models, inputs, args, "quiet")
            if not args.no_busy:
                with busy_core():
                    compare(server, models, inputs, args, "one core busy")
        finally:
            server.close()


if __name__ == "__main__":
    main()
