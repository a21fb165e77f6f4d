"""Wyoming client for sotto's `serve` tests, built only on the `wyoming` library (PyPI).

Each subcommand talks to a server on 127.0.0.1:PORT and prints one JSON object for the Rust
test to check. Nothing of sotto's own is used on this side.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import time
import wave

from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.event import read_event
from wyoming.info import Describe, Info
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
)

TIMEOUT = 120


async def read(client: AsyncTcpClient):
    event = await asyncio.wait_for(client.read_event(), TIMEOUT)
    if event is None:
        raise SystemExit("the server closed the connection")
    return event


async def describe(port: int) -> dict:
    async with AsyncTcpClient("127.0.0.1", port) as c:
        await c.write_event(Describe().event())
        while True:
            e = await read(c)
            if Info.is_type(e.type):
                return Info.from_event(e).event().data


def load_wav(path: str):
    with wave.open(path, "rb") as w:
        return w.getframerate(), w.getsampwidth(), w.getnchannels(), w.readframes(w.getnframes())


async def transcribe(port: int, path: str, chunk_bytes: int = 1024, language: str = "en") -> dict:
    rate, width, channels, data = load_wav(path)
    async with AsyncTcpClient("127.0.0.1", port) as c:
        await c.write_event(Transcribe(language=language).event())
        await c.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
        for i in range(0, len(data), chunk_bytes):
            chunk = AudioChunk(rate=rate, width=width, channels=channels, audio=data[i : i + chunk_bytes])
            await c.write_event(chunk.event())
        t0 = time.monotonic()
        await c.write_event(AudioStop().event())
        kinds, text, chunks = [], None, []
        while True:
            e = await read(c)
            kinds.append(e.type)
            if e.type == "transcript-chunk":
                chunks.append(e.data["text"])
            if Transcript.is_type(e.type):
                text = Transcript.from_event(e).text
                latency = time.monotonic() - t0
                if "transcript-start" not in kinds:
                    break  # a server without streaming ends here
            if e.type in ("transcript-stop", "error"):
                break
        return {"text": text, "chunks": "".join(chunks), "events": kinds, "latency_s": latency if text is not None else None, "error": e.data if e.type == "error" else None}


async def synthesize(port: int, text: str, out: str) -> dict:
    async with AsyncTcpClient("127.0.0.1", port) as c:
        t0 = time.monotonic()
        await c.write_event(Synthesize(text=text).event())
        first, audio, fmt = None, bytearray(), None
        while True:
            e = await read(c)
            if AudioStart.is_type(e.type):
                fmt = AudioStart.from_event(e)
            elif AudioChunk.is_type(e.type):
                if first is None:
                    first = time.monotonic() - t0
                audio += AudioChunk.from_event(e).audio
            elif AudioStop.is_type(e.type) or e.type == "error":
                break
        total = time.monotonic() - t0
    with wave.open(out, "wb") as w:
        w.setframerate(fmt.rate)
        w.setsampwidth(fmt.width)
        w.setnchannels(fmt.channels)
        w.writeframes(bytes(audio))
    seconds = len(audio) / (fmt.rate * fmt.width * fmt.channels)
    return {"first_audio_s": first, "total_s": total, "audio_s": seconds, "rate": fmt.rate}


async def stream(port: int, sentences: list[str]) -> dict:
    """synthesize-start, then each sentence as a chunk; the last is sent only after audio for
    the first has arrived (or TIMEOUT passed)."""
    async with AsyncTcpClient("127.0.0.1", port) as c:
        await c.write_event(SynthesizeStart().event())
        for s in sentences[:-1]:
            await c.write_event(SynthesizeChunk(text=s + " ").event())
        first_audio_before_last = False
        try:
            while True:
                e = await asyncio.wait_for(c.read_event(), TIMEOUT)
                if e is not None and AudioChunk.is_type(e.type):
                    first_audio_before_last = True
                    break
        except asyncio.TimeoutError:
            pass
        await c.write_event(SynthesizeChunk(text=sentences[-1]).event())
        # Streaming clients send the whole text too, for older servers; it must be ignored.
        await c.write_event(Synthesize(text=" ".join(sentences)).event())
        await c.write_event(SynthesizeStop().event())
        starts, stops, stopped = 1, 0, False
        while True:
            e = await read(c)
            if AudioStart.is_type(e.type):
                starts += 1
            elif AudioStop.is_type(e.type):
                stops += 1
            elif e.type == "synthesize-stopped":
                stopped = True
                break
            elif e.type == "error":
                break
    return {"first_audio_before_last_sent": first_audio_before_last, "audio_starts": starts, "audio_stops": stops, "stopped": stopped}


async def handle(port: int, texts: list[str]) -> dict:
    """Each text in turn on one connection (one conversation)."""
    replies = []
    async with AsyncTcpClient("127.0.0.1", port) as c:
        for text in texts:
            await c.write_event(Transcript(text=text).event())
            chunks = []
            while True:
                e = await read(c)
                if e.type == "handled-chunk":
                    chunks.append(e.data["text"])
                if e.type in ("handled", "not-handled", "error"):
                    final = e
                if e.type in ("handled-stop", "not-handled", "error"):
                    break
            replies.append({"type": final.type, "text": final.data.get("text"), "chunks": "".join(chunks), "context": final.data.get("context")})
    return {"replies": replies}


async def many(port: int, paths: list[str]) -> dict:
    results = await asyncio.gather(*(transcribe(port, p) for p in paths))
    return {"texts": [r["text"] for r in results], "latency_s": [r["latency_s"] for r in results]}


def raw(port: int, what: str) -> dict:
    """Bytes no client library would send; reports what came back."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    f = s.makefile("rwb")
    if what == "garbage":
        f.write(b"\x00\xff garbage that is not json\n")
    elif what == "truncated":
        # A header promising a 4000-byte payload, 100 bytes of it, then the client goes away
        # for writing (the server must not wait for the rest forever: it sees the close).
        f.write(b'{"type": "audio-chunk", "data": {"rate": 16000, "width": 2, "channels": 1}, "payload_length": 4000}\n' + bytes(100))
        f.flush()
        s.shutdown(socket.SHUT_WR)
    elif what == "huge":
        f.write(b'{"type": "audio-chunk", "data": {"rate": 16000, "width": 2, "channels": 1}, "payload_length": 2000000000}\n')
    elif what == "unknown":
        f.write(b'{"type": "make-coffee", "data": {}}\n')
    elif what == "bad-rate":
        f.write(b'{"type": "audio-start", "data": {"rate": 384000, "width": 2, "channels": 1}}\n')
    elif what == "slow-reader":
        # Asks for a lot of speech and never reads it: the server must drop this client, not
        # stall the voice for everyone.
        paragraph = "This is a long paragraph that goes on and on, sentence after sentence. " * 8
        for _ in range(6):
            f.write(json.dumps({"type": "synthesize", "data": {"text": paragraph}}).encode() + b"\n")
        f.flush()
        time.sleep(float(60))
        s.close()
        return {"events": [], "closed": True}
    elif what == "kill-mid-utterance":
        f.write(b'{"type": "audio-start", "data": {"rate": 16000, "width": 2, "channels": 1}}\n')
        for _ in range(20):
            f.write(b'{"type": "audio-chunk", "data": {"rate": 16000, "width": 2, "channels": 1}, "payload_length": 1024}\n' + bytes(1024))
        f.flush()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
        return {"events": [], "closed": True}
    f.flush()
    events, closed = [], False
    try:
        while True:
            e = read_event(f)
            if e is None:
                closed = True
                break
            events.append({"type": e.type, "data": e.data})
            if what in ("unknown", "bad-rate"):
                break
    except (socket.timeout, ConnectionResetError):
        closed = True
    s.close()
    return {"events": events, "closed": closed}


def discover(name: str) -> dict:
    """Browses mDNS for `_wyoming._tcp` (as Home Assistant does) until `name` shows up."""
    from zeroconf import ServiceBrowser, ServiceListener, Zeroconf

    found: dict = {}

    class Listener(ServiceListener):
        def add_service(self, zc, type_, fullname):
            info = zc.get_service_info(type_, fullname, timeout=3000)
            found[fullname] = info.port if info else None

        def update_service(self, zc, type_, fullname):
            pass

        def remove_service(self, zc, type_, fullname):
            pass

    zc = Zeroconf()
    try:
        ServiceBrowser(zc, "_wyoming._tcp.local.", Listener())
        deadline = time.monotonic() + 20
        want = f"{name}._wyoming._tcp.local."
        while time.monotonic() < deadline and want not in found:
            time.sleep(0.2)
    finally:
        zc.close()
    return {"found": found}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("describe")
    t = sub.add_parser("transcribe")
    t.add_argument("wav")
    t.add_argument("--chunk-bytes", type=int, default=1024)
    t.add_argument("--language", default="en")
    s = sub.add_parser("synthesize")
    s.add_argument("text")
    s.add_argument("out")
    st = sub.add_parser("stream")
    st.add_argument("sentences", nargs="+")
    h = sub.add_parser("handle")
    h.add_argument("texts", nargs="+")
    m = sub.add_parser("many")
    m.add_argument("wavs", nargs="+")
    r = sub.add_parser("raw")
    r.add_argument("what", choices=["garbage", "truncated", "huge", "unknown", "bad-rate", "kill-mid-utterance", "slow-reader"])
    d = sub.add_parser("discover")
    d.add_argument("name")
    a = ap.parse_args()
    if a.cmd == "describe":
        out = asyncio.run(describe(a.port))
    elif a.cmd == "transcribe":
        out = asyncio.run(transcribe(a.port, a.wav, a.chunk_bytes, a.language))
    elif a.cmd == "synthesize":
        out = asyncio.run(synthesize(a.port, a.text, a.out))
    elif a.cmd == "stream":
        out = asyncio.run(stream(a.port, a.sentences))
    elif a.cmd == "handle":
        out = asyncio.run(handle(a.port, a.texts))
    elif a.cmd == "many":
        out = asyncio.run(many(a.port, a.wavs))
    elif a.cmd == "discover":
        out = discover(a.name)
    else:
        out = raw(a.port, a.what)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
