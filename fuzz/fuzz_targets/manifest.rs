//! The MOF manifest parser (and the verdict over whatever parses) must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(m) = sotto::audit::manifest::Manifest::parse("fuzz", text)
    {
        let _ = sotto::audit::verdict::judge(&m, &Default::default());
    }
});
