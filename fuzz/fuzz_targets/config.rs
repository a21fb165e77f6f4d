//! The configuration file: any text is settings or an error naming the key, line or range.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(file) =
            sotto::config::ConfigFile::parse(std::path::Path::new("config.toml"), text)
    {
        let _ = sotto::settings::Settings::resolve(&file, &Default::default());
    }
});
