//! The configuration file: any text is a configuration or an error naming the key or line.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = sotto::config::Config::parse(std::path::Path::new("config.toml"), text);
    }
});
