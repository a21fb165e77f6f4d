//! The WAV path: decoding any bytes is an error or a clip; a clip that decodes goes on to
//! the resampler as `transcribe` sends it to Whisper (bounded here so the fuzzer stays fast).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(clip) = sotto::audio::decode_wav(std::path::Path::new("fuzz.wav"), data)
        && clip.samples.len() <= 1 << 16
    {
        let _ = sotto::audio::resample(&clip.samples, clip.sample_rate_hz, 16_000);
    }
});
