//! The whisper.cpp model header reader must return an error, never panic, and never trust a
//! length or count the bytes claim beyond the file.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = std::io::Cursor::new(data);
    let _ = sotto::models::whisper_ggml::Header::parse(
        std::path::Path::new("fuzz.bin"),
        &mut r,
        data.len() as u64,
    );
});
