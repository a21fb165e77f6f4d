#!/usr/bin/env python3
"""Side-by-side over Wyoming: `sotto serve` against wyoming-faster-whisper (ASR) and
wyoming-piper (TTS), on the same model files and thread count, in one run, interleaved.

Measured through the `wyoming` client library, as Home Assistant sees a server:
- ASR latency: from `audio-stop` to `transcript` (jfk.wav, 11 s; a 2.5 s espeak question);
- TTS: time from `synthesize` to the first `audio-chunk`, and the real-time factor (time to
  the last chunk over the audio's length), for a sentence and a paragraph;
- ASR throughput: K clients sending jfk.wav at once (K = 1, 4, 8): clips per second.

The references run from a Python environment that has them (--ref-python; e.g.
`pip install wyoming-faster-whisper wyoming-piper`): faster-whisper on sotto's CTranslate2
tiny.en (int8, its fastest on this CPU), piper on sotto's joe voice. sotto serve uses the
config of whoever runs it (tiny.en must have been accepted, as scripts/setup asks).

Usage: python3 scripts/compare_serve.py --ref-python /opt/refvenv/bin/python [--runs 7]
The client side needs `wyoming` importable (the .venv-tests Python has it).
"""
from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

from benchlib import ROOT, interleave, load, median

from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.tts import Synthesize

SOTTO = ROOT / "target" / "release" / "sotto"
JFK = ROOT.parent / "shared" / "fixtures" / "jfk.wav"
TEXTS = {
    "sentence": "The quick brown fox jumps over the lazy dog near the river bank.",
    "paragraph": ("Good morning, and welcome to the weekly meeting. The new office opens next month, "
                  "and every team will move in over two weekends. Please pack your desks on Friday. "
                  "Thank you all for your hard work this quarter."),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, proc: subprocess.Popen, name: str) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{name} did not start")


def read_wav(path: Path):
    with wave.open(str(path), "rb") as w:
        return w.getframerate(), w.getsampwidth(), w.getnchannels(), w.readframes(w.getnframes())


async def transcribe(port: int, clip) -> tuple[float, str]:
    rate, width, channels, data = clip
    async with AsyncTcpClient("127.0.0.1", port) as c:
        await c.write_event(Transcribe(language="en").event())
        await c.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
        for i in range(0, len(data), 1024):
            await c.write_event(AudioChunk(rate=rate, width=width, channels=channels,
                                           audio=data[i:i + 1024]).event())
        t0 = time.perf_counter()
        await c.write_event(AudioStop().event())
        while True:
            e = await c.read_event()
            if e is None:
                raise SystemExit(f"port {port} closed without a transcript")
            if Transcript.is_type(e.type):
                return time.perf_counter() - t0, Transcript.from_event(e).text


async def synthesize(port: int, text: str) -> tuple[float, float]:
    async with AsyncTcpClient("127.0.0.1", port) as c:
        t0 = time.perf_counter()
        await c.write_event(Synthesize(text=text).event())
        first, nbytes, fmt = None, 0, None
        while True:
            e = await c.read_event()
            if e is None:
                raise SystemExit(f"port {port} closed before audio-stop")
            if AudioStart.is_type(e.type):
                fmt = AudioStart.from_event(e)
            elif AudioChunk.is_type(e.type):
                first = first if first is not None else time.perf_counter() - t0
                nbytes += len(e.payload or b"")
            elif AudioStop.is_type(e.type):
                total = time.perf_counter() - t0
                break
    audio_s = nbytes / (fmt.rate * fmt.width * fmt.channels)
    return first, total / audio_s


async def throughput(port: int, clip, k: int) -> float:
    t0 = time.perf_counter()
    await asyncio.gather(*(transcribe(port, clip) for _ in range(k)))
    return k / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref-python", required=True, help="Python with wyoming-faster-whisper and wyoming-piper")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--beam-size", type=int, default=5)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="compare-serve-"))
    voice_dir = tmp / "voices"
    voice_dir.mkdir()
    for suffix in ("onnx", "onnx.json"):
        src = ROOT / "models" / "piper-en_US-joe-medium" / f"en_US-joe-medium.{suffix}"
        (voice_dir / src.name).symlink_to(src)
    question = tmp / "question.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(question),
                    "What is the capital of France?"], check=True)

    ports = {name: free_port() for name in ("sotto", "fw", "piper")}
    procs = {
        "sotto": subprocess.Popen(
            [str(SOTTO), "serve", "--uri", f"tcp://127.0.0.1:{ports['sotto']}", "--asr", "--tts",
             "--threads", str(args.threads), "--beam-size", str(args.beam_size)],
            stderr=subprocess.DEVNULL),
        "fw": subprocess.Popen(
            [args.ref_python, "-m", "wyoming_faster_whisper", "--uri", f"tcp://127.0.0.1:{ports['fw']}",
             "--model", str(ROOT / "models" / "whisper-tiny.en-ct2"), "--data-dir", str(tmp),
             "--local-files-only", "--compute-type", "int8", "--cpu-threads", str(args.threads),
             "--beam-size", str(args.beam_size), "--language", "en"],
            stderr=subprocess.DEVNULL),
        "piper": subprocess.Popen(
            [args.ref_python, "-m", "wyoming_piper", "--uri", f"tcp://127.0.0.1:{ports['piper']}",
             "--voice", "en_US-joe-medium", "--data-dir", str(voice_dir)],
            stderr=subprocess.DEVNULL),
    }
    try:
        for name, proc in procs.items():
            wait_ready(ports[name], proc, name)
        versions = subprocess.run(
            [args.ref_python, "-c",
             "import importlib.metadata as m; print(', '.join(p + ' ' + m.version(p) for p in "
             "('wyoming-faster-whisper', 'faster-whisper', 'ctranslate2', 'wyoming-piper', 'piper-tts', 'onnxruntime')))"],
            capture_output=True, text=True, check=True).stdout.strip()
        print(f"references: {versions}; sotto serve ONNX Runtime 1.32.0 (models/pins.tsv)")
        print(f"threads {args.threads}, beam {args.beam_size}, {args.runs} interleaved runs each; {load()}")
        run = asyncio.run

        for label, path in (("jfk.wav 11 s", JFK), ("espeak question 2.5 s", question)):
            clip = read_wav(path)
            a, b = interleave(lambda: run(transcribe(ports["sotto"], clip)),
                              lambda: run(transcribe(ports["fw"], clip)), args.runs)
            sa, sb = median([x[0] for x in a]), median([x[0] for x in b])
            print(f"ASR {label}: sotto {sa * 1000:.0f} ms, wyoming-faster-whisper {sb * 1000:.0f} ms "
                  f"(audio-stop to transcript, median) → ratio {sb / sa:.2f}")
            print(f"    sotto: {a[-1][1].strip()!r}\n    fw:    {b[-1][1].strip()!r}")

        for label, text in TEXTS.items():
            a, b = interleave(lambda: run(synthesize(ports["sotto"], text)),
                              lambda: run(synthesize(ports["piper"], text)), args.runs)
            fa, fb = median([x[0] for x in a]), median([x[0] for x in b])
            ra, rb = median([x[1] for x in a]), median([x[1] for x in b])
            print(f"TTS {label}: first audio sotto {fa * 1000:.0f} ms, wyoming-piper {fb * 1000:.0f} ms "
                  f"→ ratio {fb / fa:.2f}; RTF sotto {ra:.3f}, wyoming-piper {rb:.3f} → ratio {rb / ra:.2f}")

        clip = read_wav(JFK)
        for k in (1, 4, 8):
            a, b = interleave(lambda: run(throughput(ports["sotto"], clip, k)),
                              lambda: run(throughput(ports["fw"], clip, k)), max(3, args.runs // 2))
            print(f"ASR throughput, {k} client(s) at once: sotto {median(a):.2f} clips/s, "
                  f"wyoming-faster-whisper {median(b):.2f} clips/s → ratio {median(a) / median(b):.2f}")
        print(load())
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())
