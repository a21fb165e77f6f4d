"""Home Assistant's own Wyoming integration code (homeassistant 2024.3.3, the last release that
runs on Python 3.11) against `sotto serve` on 127.0.0.1:PORT: discovery of the services from
`info`, then speech to text and text to speech through the integration's providers, driven as
the Assist pipeline drives them. Prints one JSON object for the Rust test.

Usage: python home_assistant.py PORT JFK.wav OUT.wav
"""
from __future__ import annotations

import asyncio
import json
import sys
import wave

from homeassistant.components import stt
from homeassistant.components.wyoming import stt as wyoming_stt
from homeassistant.components.wyoming import tts as wyoming_tts
from homeassistant.components.wyoming.data import WyomingService


class Entry:
    """The parts of a config entry the providers read."""

    entry_id = "sotto-test"


async def main(port: int, wav_in: str, wav_out: str) -> dict:
    service = await WyomingService.create("127.0.0.1", port)
    if service is None:
        return {"error": "Home Assistant found no Wyoming service"}
    out: dict = {
        "platforms": sorted(str(p) for p in service.platforms),
        "name": service.get_name(),
    }

    provider = wyoming_stt.WyomingSttProvider(Entry(), service)
    out["stt_languages"] = provider.supported_languages
    with wave.open(wav_in, "rb") as w:
        audio = w.readframes(w.getnframes())

    async def chunks():
        for i in range(0, len(audio), 1024):
            yield audio[i : i + 1024]

    metadata = stt.SpeechMetadata(
        language="en",
        format=stt.AudioFormats.WAV,
        codec=stt.AudioCodecs.PCM,
        bit_rate=stt.AudioBitRates.BITRATE_16,
        sample_rate=stt.AudioSampleRates.SAMPLERATE_16000,
        channel=stt.AudioChannels.CHANNEL_MONO,
    )
    result = await provider.async_process_audio_stream(metadata, chunks())
    out["stt_result"] = str(result.result)
    out["stt_text"] = result.text

    voice = wyoming_tts.WyomingTtsProvider(Entry(), service)
    out["tts_languages"] = voice.supported_languages
    voices = voice.async_get_supported_voices(voice.default_language) or []
    out["tts_voices"] = [v.name for v in voices]
    kind, data = await voice.async_get_tts_audio(
        "The library opens at nine in the morning on weekdays.", voice.default_language, {}
    )
    out["tts_kind"] = kind
    if data:
        with open(wav_out, "wb") as f:
            f.write(data)
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))))
