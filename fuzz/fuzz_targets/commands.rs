//! The voice commands file, and the matcher over hostile transcripts: the first half of the
//! input is the file, the second a transcript matched against it and read as a yes/no reply.
#![no_main]
use libfuzzer_sys::fuzz_target;

/// One command of each kind: plain, a text slot, a number slot, a slot of listed values.
const SHIPPED: &str = r#"
[[command]]
name = "lamp-on"
phrases = ["turn on the lamp", "lamp on"]
run = ["/bin/true", "on"]

[[command]]
name = "note"
phrases = ["take a note {text}"]
run = ["/bin/echo", "{text}"]
slots.text = { kind = "text" }
confirm = true

[[command]]
name = "volume"
phrases = ["set the volume to {level}"]
run = ["/bin/true", "{level}"]
slots.level = { kind = "number" }

[[command]]
name = "open"
phrases = ["open {app}"]
open = "{app}"
slots.app = { values = ["firefox", "the terminal"] }
"#;

fuzz_target!(|data: &[u8]| {
    let (file, said) = data.split_at(data.len() / 2);
    let said = String::from_utf8_lossy(said);
    let path = std::path::Path::new("commands.toml");
    let shipped = sotto::commands::Commands::parse(path, SHIPPED).expect("the shipped file parses");
    let _ = shipped.match_transcript(&said);
    let _ = sotto::commands::read_reply(&said, "Shall I do it?");
    if let Ok(text) = std::str::from_utf8(file)
        && let Ok(commands) = sotto::commands::Commands::parse(path, text)
    {
        let _ = commands.match_transcript(&said);
    }
});
