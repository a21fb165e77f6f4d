//! Cutting a voice in two (`tts::graph::split`) reads a brought ONNX file: any bytes must give
//! the parts, "not this kind of voice" or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sotto::tts::graph::split(data, None);
    let _ = sotto::tts::graph::split(data, Some("voice.onnx"));
});
