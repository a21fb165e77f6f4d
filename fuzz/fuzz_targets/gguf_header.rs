//! The GGUF header parser must return an error, never panic or allocate what the bytes claim.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sotto::models::gguf::Header::parse(data, data.len() as u64);
});
