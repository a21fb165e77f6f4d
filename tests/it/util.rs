//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn models_dir() -> PathBuf {
    repo().join("models")
}

/// A file under models/, which must have been fetched and imported by scripts/setup.
pub fn model(rel: &str) -> PathBuf {
    let p = models_dir().join(rel);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/setup (the tests use the real models)",
        p.display()
    );
    p
}

pub fn jfk_wav() -> PathBuf {
    let p = repo().join("../shared/fixtures/jfk.wav");
    assert!(p.is_file(), "{} is missing", p.display());
    p
}

pub fn jfk_txt() -> String {
    std::fs::read_to_string(repo().join("../shared/fixtures/jfk.txt")).expect("jfk.txt")
}

/// The sotto binary with the repo's models and a fresh config and cache in `dir`.
pub fn sotto_in(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sotto"));
    c.env("SOTTO_MODELS_DIR", models_dir());
    c.env("SOTTO_CONFIG_DIR", dir.join("config"));
    c.env("SOTTO_CACHE_DIR", dir.join("cache"));
    // Added models and the dictation history stay in the test's directory.
    c.env("SOTTO_DATA_DIR", dir.join("data"));
    c.env_remove("SOTTO_LOG");
    c.env_remove("SOTTO_ACCEPT");
    c
}

/// The sotto binary with the repo's models and a config (private to this test process) in
/// which the open-weight Whisper tiny.en was accepted through `sotto audit accept`, as a
/// user does once: the transcription tests are about transcription, not the policy.
pub fn sotto() -> Command {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        model(sotto::models::WHISPER_GGML);
        let out = run(sotto_in(dir.path()).args([
            "audit",
            "accept",
            "whisper-tiny.en",
            "--reason",
            "integration tests transcribe with the quick-start model",
        ]));
        assert!(out.status.success(), "{}", stderr(&out));
        dir
    });
    sotto_in(dir.path())
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("sotto runs");
    assert_ne!(
        out.status.code(),
        Some(101),
        "sotto panicked:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The `text` field of each JSON line sotto printed (`--jsonl`, `--format json`).
pub fn json_texts(out: &Output) -> Vec<String> {
    stdout(out)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("one JSON object per line");
            v["text"].as_str().expect("a text field").to_string()
        })
        .collect()
}

/// Fails (never skips) when a tool the test needs is not installed.
pub fn require_tool(name: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(found, "{name} is not installed: run scripts/setup");
}

/// Speaks `text` with espeak-ng (US English, 160 wpm) into a 22.05 kHz mono WAV.
pub fn espeak(text: &str, out: &Path) {
    require_tool("espeak-ng");
    let st = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "160", "-w"])
        .arg(out)
        .arg(text)
        .status()
        .expect("espeak-ng runs");
    assert!(st.success(), "espeak-ng failed");
}

/// Speaks `text` with one of Festival's voices into a 16 kHz mono WAV. Festival's Italian
/// (`lp_diphone`: diphones cut from a woman's recorded speech) and Russian
/// (`msu_ru_nsh_clunits`: unit selection over a man's recorded speech) voices are made of
/// real recordings, far nearer a person than espeak-ng's formant synthesis. `latin1`: the
/// Italian voices read ISO-8859-1, the Russian one UTF-8.
pub fn festival(voice: &str, text: &str, latin1: bool, out: &Path) {
    require_tool("text2wave");
    let bytes: Vec<u8> = if latin1 {
        text.chars()
            .map(|c| u8::try_from(u32::from(c)).expect("a Latin-1 character"))
            .collect()
    } else {
        text.as_bytes().to_vec()
    };
    let txt = out.with_extension("txt");
    std::fs::write(&txt, bytes).unwrap();
    let st = Command::new("text2wave")
        .arg("-eval")
        .arg(format!("(voice_{voice})"))
        .arg(&txt)
        .arg("-o")
        .arg(out)
        .status()
        .expect("text2wave runs");
    assert!(st.success(), "text2wave (festival) failed");
}

/// Converts a WAV with sox: extra args go before the output name (e.g. `-r 8000 -c 2 -b 24`).
pub fn sox(input: &Path, args: &[&str], out: &Path) {
    require_tool("sox");
    let st = Command::new("sox")
        .arg(input)
        .args(args)
        .arg(out)
        .status()
        .expect("sox runs");
    assert!(st.success(), "sox failed");
}

/// `secs` seconds of silence at 22.05 kHz (sox).
pub fn silence(dir: &std::path::Path, secs: &str) -> std::path::PathBuf {
    let p = dir.join(format!("silence{secs}.wav"));
    require_tool("sox");
    let st = Command::new("sox")
        .args(["-n", "-r", "22050", "-c", "1", "-b", "16"])
        .arg(&p)
        .args(["trim", "0", secs])
        .status()
        .unwrap();
    assert!(st.success());
    p
}

/// Joins WAVs of one format end to end (sox).
pub fn concat(parts: &[std::path::PathBuf], out: &std::path::Path) {
    let st = Command::new("sox").args(parts).arg(out).status().unwrap();
    assert!(st.success());
}

/// Lower-case words without punctuation; small numbers spelled out, as ASR evaluation
/// normalisers do ("7" and "seven" are the same word to a listener).
pub fn words(text: &str) -> Vec<String> {
    const SMALL: [&str; 21] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
        "twenty",
    ];
    text.split_whitespace()
        .map(|w| {
            let w = w
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == '\'')
                .collect::<String>()
                .to_lowercase();
            match w.parse::<usize>() {
                Ok(n) if n < SMALL.len() => SMALL[n].to_string(),
                _ => w,
            }
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Word error rate: word-level edit distance over the reference length.
pub fn wer(reference: &str, hypothesis: &str) -> f64 {
    let r = words(reference);
    let h = words(hypothesis);
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut cur = vec![i + 1; h.len() + 1];
        for (j, hw) in h.iter().enumerate() {
            let sub = prev[j] + usize::from(rw != hw);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[h.len()] as f64 / r.len().max(1) as f64
}

#[test]
fn wer_counts_edits() {
    assert_eq!(wer("a b c d", "a b c d"), 0.0);
    assert_eq!(wer("a b c d", "a x c"), 0.5);
    assert_eq!(wer("Hello, world!", "hello world"), 0.0);
    assert_eq!(wer("She has 3 brothers", "she has three brothers"), 0.0);
}

/// A clock started now: `at(s)` sleeps until `s` seconds after it started (at once if that
/// has passed), to act in step with a file fed at real-time pace.
pub fn pacer() -> impl Fn(f64) {
    let t0 = std::time::Instant::now();
    move |secs: f64| {
        let due = std::time::Duration::from_secs_f64(secs.max(0.0));
        if let Some(wait) = due.checked_sub(t0.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

/// Speaks `text` with sotto's Piper voice into a 22.05 kHz 16-bit mono WAV (the format of
/// [`silence`], so the two join with [`concat`]), without the quarter second of silence Piper
/// puts at either end, so the pauses a test writes are the pauses there are. Whisper hears
/// Piper's voice as it hears a person: espeak's clipped "for" at a pause comes back as
/// "for it.", Piper's as "for."
pub fn voice(text: &str, out: &Path) {
    // Piper samples noise (VITS), so each rendition differs, and now and then Whisper tiny.en
    // mishears one ("Turn on the lamp." as "Turn on the left."). The tests that speak are
    // about what sotto does with a sentence, not about that: a rendition Whisper hears as
    // written is kept (up to five tries; else the last one).
    for attempt in 0..5 {
        render_voice(text, out);
        let heard = run(sotto().arg("transcribe").arg(out));
        if heard.status.success() && words(&stdout(&heard)) == words(text) {
            return;
        }
        eprintln!(
            "voice: rendition {attempt} of {text:?} heard as {:?}",
            stdout(&heard).trim()
        );
    }
}

fn render_voice(text: &str, out: &Path) {
    let raw = out.with_extension("piper.wav");
    let said = run(sotto().args(["say", "--force", "-o"]).arg(&raw).arg(text));
    assert!(said.status.success(), "sotto say: {}", stderr(&said));
    require_tool("sox");
    let trim = ["silence", "1", "0.01", "0.5%"];
    let st = Command::new("sox")
        .arg(&raw)
        .args(["-r", "22050", "-c", "1", "-b", "16"])
        .arg(out)
        .args(trim)
        .arg("reverse")
        .args(trim)
        .arg("reverse")
        .status()
        .expect("sox runs");
    assert!(st.success(), "sox failed");
}

/// `ms` milliseconds of silence at 22.05 kHz (sox).
pub fn silence_ms(dir: &Path, ms: u32) -> PathBuf {
    silence(dir, &format!("{:.3}", ms as f64 / 1000.0))
}
