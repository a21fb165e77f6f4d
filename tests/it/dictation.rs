//! `sotto dictate`: files through the live path, Ctrl-C, and a real (PulseAudio) device.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::*;

const SENTENCES: [&str; 3] = [
    "Please open the window.",
    "Turn on the kitchen lights.",
    "Remind me to call my sister.",
];

fn sigint(pid: u32) {
    let _ = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
}

#[test]
fn three_utterances_give_three_transcripts_with_their_first_words() {
    model(sotto::models::WHISPER_GGML);
    let dir = tempfile::tempdir().unwrap();
    let gap = silence(dir.path(), "1.5");
    let mut parts = vec![gap.clone()];
    for (i, s) in SENTENCES.iter().enumerate() {
        let p = dir.path().join(format!("u{i}.wav"));
        espeak(s, &p);
        parts.push(p);
        parts.push(gap.clone());
    }
    let input = dir.path().join("three.wav");
    concat(&parts, &input);
    let out = run(sotto()
        .args(["dictate", "--fast", "--jsonl", "--input"])
        .arg(&input));
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{}", stdout(&out));
    for (said, got) in SENTENCES.iter().zip(&lines) {
        let text = got["text"].as_str().unwrap();
        // The pre-roll keeps the first word.
        assert_eq!(
            words(text).first(),
            words(said).first(),
            "{said:?} → {text:?}"
        );
        assert!(wer(said, text) <= 0.34, "{said:?} → {text:?}");
        assert!(got["start"].as_f64().unwrap() < got["end"].as_f64().unwrap());
        assert!(got["latency_ms"].as_u64().is_some());
    }
    for w in lines.windows(2) {
        assert!(w[0]["end"].as_f64() <= w[1]["start"].as_f64());
    }
}

/// Runs `dictate --jsonl` on `input` (with `extra` flags); its JSON lines.
fn dictate_jsonl(input: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    let out = run(sotto()
        .args(["dictate", "--jsonl"])
        .args(extra)
        .arg("--input")
        .arg(input));
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn partials_grow_while_speech_goes_on_and_the_finals_are_those_of_a_run_without_them() {
    model(sotto::models::WHISPER_GGML);
    let dir = tempfile::tempdir().unwrap();
    // About 24 s: the speech twice, a second of silence after each.
    let jfk = dir.path().join("jfk22.wav");
    sox(&jfk_wav(), &["-r", "22050"], &jfk);
    let gap = silence(dir.path(), "1");
    let input = dir.path().join("twice.wav");
    concat(&[jfk.clone(), gap.clone(), jfk, gap], &input);

    let plain = dictate_jsonl(&input, &["--fast"]);
    assert!(plain.iter().all(|l| l["kind"] == "final"), "{plain:?}");
    // In real time, as from a microphone: partials are about speech still going on.
    let live = dictate_jsonl(&input, &["--partials"]);

    let finals = |lines: &[serde_json::Value]| -> String {
        let kept = lines.iter().filter(|l| l["kind"] == "final");
        let texts: Vec<&str> = kept.map(|l| l["text"].as_str().unwrap()).collect();
        texts.join(" ")
    };
    let (without, with) = (finals(&plain), finals(&live));
    assert!(
        wer(&without, &with) <= 0.05,
        "finals with partials differ:\n  without: {without}\n  with:    {with}"
    );
    assert!(
        wer(&format!("{} {}", jfk_txt(), jfk_txt()), &with) <= 0.1,
        "{with}"
    );

    // Each utterance: partials over a growing stretch of audio, all before its final, then
    // the final (the only line with a latency).
    let mut partials_seen = 0;
    let mut utterance: Vec<&serde_json::Value> = Vec::new();
    for line in &live {
        if line["kind"] == "partial" {
            assert!(line.get("latency_ms").is_none(), "{line}");
            if let Some(prev) = utterance.last() {
                assert_eq!(
                    prev["start"], line["start"],
                    "one utterance: {prev} then {line}"
                );
                assert!(
                    prev["end"].as_f64() < line["end"].as_f64(),
                    "{prev} then {line}"
                );
            }
            utterance.push(line);
            continue;
        }
        assert_eq!(line["kind"], "final", "{line}");
        assert!(line["latency_ms"].as_u64().is_some(), "{line}");
        if let (Some(first), Some(last)) = (utterance.first(), utterance.last()) {
            assert_eq!(first["start"], line["start"], "{first} belongs to {line}");
            assert!(
                last["end"].as_f64() <= line["end"].as_f64(),
                "{last} then {line}"
            );
            let n = |l: &serde_json::Value| words(l["text"].as_str().unwrap()).len();
            assert!(n(first) < n(last), "the text grew: {first} … {last}");
            // The last partial heard nearly everything the final did.
            assert!(n(last) + 2 >= n(line), "{last} then {line}");
        }
        partials_seen += utterance.len();
        utterance.clear();
    }
    assert!(
        utterance.is_empty(),
        "partials after the last final: {utterance:?}"
    );
    // One a second of speech: ~20 s of speech gives well over ten.
    assert!(partials_seen >= 12, "{live:?}");
}

#[test]
fn a_two_minute_monologue_is_split_without_losing_words() {
    model(sotto::models::WHISPER_GGML);
    let dir = tempfile::tempdir().unwrap();
    let text = "Good morning everyone, and thank you for joining the weekly planning meeting. \
        First, the new office on the second floor will open next month, and every team will \
        move in over two weekends. Please pack your desks on Friday afternoon and label every \
        box with your name and your team. Second, the quarterly report is almost finished. The \
        sales numbers are better than last year, and the support team answered most questions \
        within a day. Third, we are looking for volunteers to organise the summer party. If you \
        would like to help, send a short message to the office manager before the end of the \
        week. Finally, remember that the kitchen will be closed on Monday for cleaning, so bring \
        your own lunch or try one of the small restaurants near the station. That is all for \
        today.";
    let speech = dir.path().join("monologue.wav");
    // Slow and without pauses longer than the hangover, so the VAD never ends it by itself.
    require_tool("espeak-ng");
    let st = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "120", "-g", "1", "-w"])
        .arg(&speech)
        .arg(format!("{text} {text}"))
        .status()
        .unwrap();
    assert!(st.success());
    let out = run(sotto()
        .args([
            "dictate",
            "--fast",
            "--jsonl",
            "--hangover-ms",
            "1500",
            "--max-utterance-s",
            "20",
            "--input",
        ])
        .arg(&speech));
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines.len() >= 6,
        "a ~2.5 min monologue in ≤ 20 s pieces: {}",
        lines.len()
    );
    assert!(
        lines.iter().any(|l| l["split"] == true),
        "split at the maximum length"
    );
    let heard: Vec<&str> = lines.iter().map(|l| l["text"].as_str().unwrap()).collect();
    let w = wer(&format!("{text} {text}"), &heard.join(" "));
    assert!(
        w <= 0.10,
        "WER {:.1}% across the pieces:\n{}",
        w * 100.0,
        heard.join("\n")
    );
}

#[test]
fn ctrl_c_during_an_utterance_still_prints_it() {
    model(sotto::models::WHISPER_GGML);
    let child = sotto()
        .args(["dictate", "--input"])
        .arg(jfk_wav())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // jfk.wav is one 11 s utterance fed at real-time pace: interrupt it in the middle.
    std::thread::sleep(Duration::from_secs(6));
    sigint(child.id());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.to_lowercase().contains("my fellow americans"),
        "the words said before Ctrl-C are printed: {text:?}"
    );
}

#[test]
fn dictation_from_a_real_input_device() {
    model(sotto::models::WHISPER_GGML);
    require_tool("paplay");
    // PulseAudio null sink `v`, its monitor the default source (scripts/pulse-null-sink).
    let child = sotto()
        .args(["dictate", "--jsonl"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let played = Command::new("paplay")
        .args(["-d", "v"])
        .arg(jfk_wav())
        .status()
        .unwrap();
    assert!(
        played.success(),
        "paplay failed: is PulseAudio running? (scripts/pulse-null-sink)"
    );
    std::thread::sleep(Duration::from_secs(3));
    sigint(child.id());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let heard = json_texts(&out);
    let w = wer(&jfk_txt(), &heard.join(" "));
    assert!(w <= 0.15, "WER {:.0}%: {heard:?}", w * 100.0);
}

#[test]
fn devices_are_listed() {
    let out = run(sotto().arg("devices"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("input"), "{}", stdout(&out));
}

fn wav_seconds(p: &std::path::Path) -> f64 {
    let r = hound::WavReader::open(p).unwrap();
    r.duration() as f64 / r.spec().sample_rate as f64
}

/// The three sentences with 2 s of silence around each: the file, each sentence's
/// (start, end) in seconds, and the file's length.
fn three_sentences(dir: &std::path::Path) -> (std::path::PathBuf, Vec<(f64, f64)>, f64) {
    let gap = silence(dir, "2");
    let mut parts = vec![gap.clone()];
    let mut spans = Vec::new();
    let mut t = wav_seconds(&gap);
    for (i, s) in SENTENCES.iter().enumerate() {
        let p = dir.join(format!("u{i}.wav"));
        espeak(s, &p);
        let d = wav_seconds(&p);
        spans.push((t, t + d));
        t += d + wav_seconds(&gap);
        parts.push(p);
        parts.push(gap.clone());
    }
    let input = dir.join("three.wav");
    concat(&parts, &input);
    (input, spans, t)
}

#[test]
fn push_to_talk_records_between_toggles_and_cancel_discards() {
    model(sotto::models::WHISPER_GGML);
    let dir = tempfile::tempdir().unwrap();
    let (input, spans, t) = three_sentences(dir.path());
    let runtime = dir.path().join("run");
    let child = sotto()
        .env("XDG_RUNTIME_DIR", &runtime)
        .args(["dictate", "--ptt", "toggle", "--jsonl", "--input"])
        .arg(&input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let at = pacer();
    let ctl = |cmd: &str| {
        let out = run(sotto().env("XDG_RUNTIME_DIR", &runtime).args(["ctl", cmd]));
        assert!(out.status.success(), "ctl {cmd}: {}", stderr(&out));
    };
    // Sentence 1: recorded, then cancelled — never printed.
    at(spans[0].0 - 0.7);
    ctl("start");
    at(spans[0].1 + 0.3);
    ctl("cancel");
    // Sentence 2: SIGUSR1 toggles on and off around it.
    at(spans[1].0 - 0.7);
    let usr1 = || {
        let _ = Command::new("kill")
            .args(["-USR1", &child.id().to_string()])
            .status();
    };
    usr1();
    at(spans[1].1 + 0.5);
    usr1();
    // Sentence 3 is never recorded. Let the file finish.
    at(t + 0.5);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_texts(&out);
    assert_eq!(lines.len(), 1, "only the toggled sentence: {lines:?}");
    assert!(wer(SENTENCES[1], &lines[0]) <= 0.34, "{lines:?}");
}

#[test]
fn dictation_settings_come_from_the_config_file_and_flags_override_them() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/config.toml"),
        "[dictate]\nmax_utterance_s = 40\n",
    )
    .unwrap();
    let out = run(sotto_in(dir.path())
        .args(["dictate", "--input"])
        .arg(jfk_wav()));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("dictate.max_utterance_s")
            && stderr(&out).contains("40 s is out of range"),
        "{}",
        stderr(&out)
    );
    // The flag wins over the file; then the audit (no exception in this config) refuses.
    let out = run(sotto_in(dir.path())
        .args(["dictate", "--max-utterance-s", "20", "--input"])
        .arg(jfk_wav()));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

/// A virtual X server for desktop tests (Xvfb); killed on drop.
struct Xvfb {
    child: std::process::Child,
    display: String,
}

impl Xvfb {
    fn start() -> Self {
        require_tool("Xvfb");
        // Xvfb picks a free display itself and writes its number to stdout once it accepts
        // connections (a display number of our own could meet a stale socket).
        let mut child = Command::new("Xvfb")
            .args(["-displayfd", "1", "-nolisten", "tcp"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb runs");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let n: u32 = line.trim().parse().expect("Xvfb reports its display");
        Self {
            child,
            display: format!(":{n}"),
        }
    }

    fn xdotool(&self, args: &[&str]) {
        require_tool("xdotool");
        let st = Command::new("xdotool")
            .env("DISPLAY", &self.display)
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "xdotool {args:?}");
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_global_hotkey_held_records_exactly_what_is_said_while_it_is_down() {
    model(sotto::models::WHISPER_GGML);
    let x = Xvfb::start();
    let dir = tempfile::tempdir().unwrap();
    let (input, spans, t) = three_sentences(dir.path());
    let child = sotto()
        .env("DISPLAY", &x.display)
        .env("XDG_RUNTIME_DIR", dir.path().join("run"))
        .args(["dictate", "--ptt-key", "ctrl+F9", "--jsonl", "--input"])
        .arg(&input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let at = pacer();
    // F9 alone around sentence 1 is not the combination: nothing is recorded.
    at(spans[0].0 - 0.7);
    x.xdotool(&["keydown", "F9"]);
    at(spans[0].1 + 0.3);
    x.xdotool(&["keyup", "F9"]);
    // ctrl+F9 held through sentence 2 (hold mode): recorded, transcribed on release.
    at(spans[1].0 - 0.7);
    x.xdotool(&["keydown", "ctrl+F9"]);
    at(spans[1].1 + 0.5);
    x.xdotool(&["keyup", "ctrl+F9"]);
    at(t + 0.5);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_texts(&out);
    assert_eq!(
        lines.len(),
        1,
        "only the sentence said with the keys down: {lines:?}"
    );
    assert!(wer(SENTENCES[1], &lines[0]) <= 0.34, "{lines:?}");
}

/// A keyboard made through /dev/uinput: the kernel sees it as any other, so the evdev hotkey
/// reads its keys as it reads a real keyboard's.
struct VirtualKeyboard(std::fs::File);

impl VirtualKeyboard {
    const EV_SYN: u16 = 0;
    const EV_KEY: u16 = 1;

    fn create() -> std::io::Result<Self> {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/uinput")?;
        let fd = f.as_raw_fd();
        // _IOW('U', nr, int) and _IO('U', nr), as linux/uinput.h defines them.
        let iow = |nr: u64| (1u64 << 30) | (4 << 16) | ((b'U' as u64) << 8) | nr;
        let io = |nr: u64| ((b'U' as u64) << 8) | nr;
        let check = |r: i32| {
            if r < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        // SAFETY: plain integer ioctls on the uinput descriptor.
        unsafe {
            check(libc::ioctl(fd, iow(100) as _, Self::EV_KEY as libc::c_int))?; // UI_SET_EVBIT
            for key in [30, 59, 29, 67] {
                // KEY_A and KEY_F1 (so it is a keyboard), KEY_LEFTCTRL, KEY_F9: UI_SET_KEYBIT
                check(libc::ioctl(fd, iow(101) as _, key as libc::c_int))?;
            }
        }
        // struct uinput_user_dev: name[80], input_id (4 × u16), ff_effects_max (u32), then
        // absmax/absmin/absfuzz/absflat, 4 × 64 i32.
        let mut dev = vec![0u8; 80 + 8 + 4 + 4 * 64 * 4];
        dev[..21].copy_from_slice(b"sotto test keyboard\0\0");
        dev[80..82].copy_from_slice(&3u16.to_ne_bytes()); // BUS_USB
        let mut f = f;
        f.write_all(&dev)?;
        // SAFETY: UI_DEV_CREATE takes no argument.
        unsafe { check(libc::ioctl(fd, io(1) as _))? };
        // Give udev and the device node a moment to appear.
        std::thread::sleep(Duration::from_millis(500));
        Ok(Self(f))
    }

    fn event(&mut self, kind: u16, code: u16, value: i32) {
        use std::io::Write;
        // struct input_event: struct timeval (2 × i64 here), u16 type, u16 code, i32 value.
        let mut e = [0u8; 24];
        e[16..18].copy_from_slice(&kind.to_ne_bytes());
        e[18..20].copy_from_slice(&code.to_ne_bytes());
        e[20..24].copy_from_slice(&value.to_ne_bytes());
        self.0.write_all(&e).expect("uinput write");
    }

    fn key(&mut self, code: u16, down: bool) {
        self.event(Self::EV_KEY, code, down as i32);
        self.event(Self::EV_SYN, 0, 0);
    }
}

impl Drop for VirtualKeyboard {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: UI_DEV_DESTROY takes no argument.
        unsafe { libc::ioctl(self.0.as_raw_fd(), (((b'U' as u64) << 8) | 2) as _) };
    }
}

#[test]
fn an_evdev_hotkey_held_on_a_virtual_keyboard_records_one_sentence() {
    model(sotto::models::WHISPER_GGML);
    if !Path::new("/dev/uinput").exists() {
        eprintln!(
            "SKIPPED LOUDLY: /dev/uinput is missing on this machine (no uinput in its kernel), \
             so no virtual keyboard can be made: the evdev hotkey was not exercised end to end"
        );
        return;
    }
    let mut kb = match VirtualKeyboard::create() {
        Ok(kb) => kb,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "/dev/uinput is present but unusable in CI: {e}"
            );
            eprintln!("skipped: /dev/uinput is present but unusable here: {e}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let (input, spans, t) = three_sentences(dir.path());
    let child = sotto()
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env("XDG_RUNTIME_DIR", dir.path().join("run"))
        .args([
            "dictate",
            "--ptt-key",
            "F9",
            "--ptt",
            "hold",
            "--jsonl",
            "--input",
        ])
        .arg(&input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let at = pacer();
    at(spans[1].0 - 0.7);
    kb.key(67, true);
    at(spans[1].1 + 0.5);
    kb.key(67, false);
    at(t + 0.5);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_texts(&out);
    assert_eq!(
        lines.len(),
        1,
        "only the sentence said with F9 down: {lines:?}"
    );
    assert!(wer(SENTENCES[1], &lines[0]) <= 0.34, "{lines:?}");
}

#[test]
fn the_hotkey_without_x11_watches_the_input_devices_or_says_why_not() {
    // No X11 session: Wayland and the console read the kernel's input devices.
    let readable_keyboards = std::fs::read_dir("/dev/input").is_ok_and(|d| {
        d.filter_map(|e| e.ok())
            .any(|e| std::fs::File::open(e.path()).is_ok())
    });
    if readable_keyboards {
        eprintln!("skipped: this machine has readable input devices (the error path is not taken)");
        return;
    }
    let out = run(sotto()
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .args(["dictate", "--ptt-key", "F9", "--input"])
        .arg(jfk_wav()));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("cannot watch the keyboard"), "{err}");
    assert!(
        err.contains("no input devices in /dev/input") || err.contains("the `input` group"),
        "{err}"
    );
}

#[test]
fn dictation_can_put_each_utterance_on_the_clipboard() {
    model(sotto::models::WHISPER_GGML);
    require_tool("xclip");
    let x = Xvfb::start();
    let out = run(sotto()
        .env("DISPLAY", &x.display)
        .args(["dictate", "--fast", "--clipboard", "--input"])
        .arg(jfk_wav()));
    assert!(out.status.success(), "{}", stderr(&out));
    let clip = Command::new("xclip")
        .env("DISPLAY", &x.display)
        .args(["-o", "-selection", "clipboard"])
        .output()
        .unwrap();
    let clip = String::from_utf8_lossy(&clip.stdout);
    let printed = stdout(&out);
    let last = printed.lines().last().unwrap_or_default();
    assert!(!last.is_empty(), "{printed}");
    assert_eq!(
        clip.trim(),
        last.trim(),
        "the clipboard holds the last utterance"
    );
}

/// The text a window received as key presses, from `xev`'s log.
fn typed_text(xev_log: &str) -> String {
    let mut text = String::new();
    let mut in_press = false;
    for line in xev_log.lines() {
        if line.starts_with("KeyPress event") {
            in_press = true;
        } else if line.starts_with("KeyRelease event") {
            in_press = false;
        } else if in_press && line.trim_start().starts_with("XLookupString gives") {
            if let (Some(a), Some(b)) = (line.find('"'), line.rfind('"'))
                && b > a
            {
                for c in line[a + 1..b].chars() {
                    // BackSpace arrives as its control character: it erases, as in a window.
                    if c == '\u{8}' {
                        text.pop();
                    } else {
                        text.push(c);
                    }
                }
            }
            in_press = false;
        }
    }
    text
}

/// An X display with a focused xev window that logs the keys it receives.
struct TypingTarget {
    x: Xvfb,
    xev: std::process::Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl TypingTarget {
    fn start() -> Self {
        require_tool("xev");
        let x = Xvfb::start();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("xev.log");
        let xev = Command::new("xev")
            .env("DISPLAY", &x.display)
            .args(["-name", "sotto-type-target"])
            .stdout(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("xev runs");
        let mut window = String::new();
        for _ in 0..50 {
            let out = Command::new("xdotool")
                .env("DISPLAY", &x.display)
                .args(["search", "--name", "sotto-type-target"])
                .output()
                .unwrap();
            window = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !window.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(!window.is_empty(), "the xev window did not appear");
        x.xdotool(&["windowfocus", "--sync", window.lines().next().unwrap()]);
        Self {
            x,
            xev,
            log,
            _dir: dir,
        }
    }

    /// What the window received, once the keys have arrived.
    fn typed(mut self) -> String {
        std::thread::sleep(Duration::from_millis(500));
        let _ = self.xev.kill();
        let _ = self.xev.wait();
        typed_text(&std::fs::read_to_string(&self.log).unwrap())
    }
}

#[test]
fn dictation_can_type_each_utterance_into_the_focused_window() {
    model(sotto::models::WHISPER_GGML);
    let target = TypingTarget::start();
    let out = run(sotto()
        .env("DISPLAY", &target.x.display)
        .args(["dictate", "--fast", "--type", "--input"])
        .arg(jfk_wav()));
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    let typed = target.typed();
    let expected: String = printed.lines().map(|l| format!("{} ", l.trim())).collect();
    assert_eq!(typed, expected, "what was typed is what was printed");
    assert!(wer(&jfk_txt(), &typed) <= 0.1, "{typed:?}");
}

#[test]
fn scratch_that_erases_the_last_typed_utterance() {
    model(sotto::models::WHISPER_GGML);
    let dir = tempfile::tempdir().unwrap();
    let input = scratch_that_said(dir.path());
    let target = TypingTarget::start();
    let out = run(sotto()
        .env("DISPLAY", &target.x.display)
        .args(["dictate", "--fast", "--no-history", "--type", "--input"])
        .arg(&input));
    assert!(out.status.success(), "{}", stderr(&out));
    let typed = target.typed();
    assert!(!typed.contains("Monday"), "{typed:?}");
    assert!(typed.contains("Tuesday"), "{typed:?}");
}

#[test]
fn an_input_device_that_vanishes_is_reopened_when_it_returns() {
    model(sotto::models::WHISPER_GGML);
    require_tool("pulseaudio");
    require_tool("paplay");
    // A PulseAudio server of this test's own (its own runtime dir), which the test kills and
    // starts again under a running `sotto dictate`.
    let dir = tempfile::tempdir().unwrap();
    let xdg = dir.path().join("xdg");
    let server = |args: &[&str]| {
        Command::new("bash")
            .arg(repo().join("scripts/pulse-null-sink"))
            .args(args)
            .env("XDG_RUNTIME_DIR", &xdg)
            .stdout(Stdio::null())
            .status()
            .unwrap()
    };
    let kill_server = || {
        let _ = Command::new("pulseaudio")
            .arg("-k")
            .env("XDG_RUNTIME_DIR", &xdg)
            .status();
    };
    assert!(server(&[]).success(), "PulseAudio did not start");
    let child = sotto()
        .env("XDG_RUNTIME_DIR", &xdg)
        .args(["dictate", "--jsonl"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    kill_server();
    std::thread::sleep(Duration::from_secs(2));
    assert!(server(&[]).success(), "PulseAudio did not restart");
    // The capture thread retries every second.
    std::thread::sleep(Duration::from_secs(3));
    let played = Command::new("paplay")
        .env("XDG_RUNTIME_DIR", &xdg)
        .args(["-d", "v"])
        .arg(jfk_wav())
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    sigint(child.id());
    let out = child.wait_with_output().unwrap();
    kill_server();
    assert!(played.success(), "paplay failed");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("reopening"),
        "the lost device is reported: {}",
        stderr(&out)
    );
    let heard = json_texts(&out);
    let w = wer(&jfk_txt(), &heard.join(" "));
    assert!(
        w <= 0.15,
        "after the device returned: WER {:.0}%: {heard:?}",
        w * 100.0
    );
}

#[test]
fn a_symlink_planted_at_the_fallback_control_dir_is_refused_and_nothing_outside_is_touched() {
    model(sotto::models::WHISPER_GGML);
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let victim = dir.path().join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("keep.txt"), b"mine").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(cache.join("sotto")).unwrap();
    std::os::unix::fs::symlink(&victim, cache.join("sotto/run")).unwrap();
    let no_runtime = |c: &mut Command| {
        c.env_remove("XDG_RUNTIME_DIR")
            .env("XDG_CACHE_HOME", &cache);
    };
    let mut dictate = sotto();
    no_runtime(&mut dictate);
    let out = run(dictate
        .args(["dictate", "--ptt", "toggle", "--fast", "--input"])
        .arg(jfk_wav()));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("symlink"), "{}", stderr(&out));
    let mut ctl = sotto();
    no_runtime(&mut ctl);
    let out = run(ctl.args(["ctl", "toggle"]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("symlink"), "{}", stderr(&out));
    let mode = std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755, "the symlink's target was not chmod-ed");
    assert_eq!(
        std::fs::read_dir(&victim).unwrap().count(),
        1,
        "nothing created in it"
    );
    assert_eq!(std::fs::read(victim.join("keep.txt")).unwrap(), b"mine");
}

/// Binds a listener at `path` as root, then runs `listen()` as uid 65534 (SO_PEERCRED reports
/// the listener's credentials from the time it listened) and records whether any command came.
fn foreign_listener(path: &Path, chown: bool, got: &Path) -> std::process::Child {
    let script = r#"
import os, socket, sys, time
path, chown, got = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
s = socket.socket(socket.AF_UNIX)
s.bind(path)
if chown:
    os.chown(path, 65534, 65534)
os.setuid(65534)
s.listen(1)
print("ready", flush=True)
s.settimeout(2)
try:
    c, _ = s.accept()
    c.settimeout(1)
    data = c.recv(100)
    open(got, "w").write(data.decode())
except Exception:
    pass
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .arg(if chown { "1" } else { "0" })
        .arg(got)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    child
}

#[test]
fn ctl_refuses_a_control_socket_of_another_user() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        assert!(
            std::env::var_os("CI").is_none(),
            "this test makes a listener of another user and needs root (CI runs as root)"
        );
        eprintln!("skipped: needs root to make a listener of another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("run");
    // The first ctl makes the private directory (and finds nobody listening).
    let out = run(sotto()
        .env("XDG_RUNTIME_DIR", &runtime)
        .args(["ctl", "toggle"]));
    assert!(!out.status.success());
    let sock = runtime.join("sotto/ctl.sock");
    for (chown, want) in [(true, "owned by uid 65534"), (false, "runs as uid 65534")] {
        let _ = std::fs::remove_file(&sock);
        let got = dir.path().join("got.txt");
        let _ = std::fs::remove_file(&got);
        let mut child = foreign_listener(&sock, chown, &got);
        let out = run(sotto()
            .env("XDG_RUNTIME_DIR", &runtime)
            .args(["ctl", "toggle"]));
        let _ = child.wait();
        assert!(!out.status.success(), "ctl must refuse");
        assert!(stderr(&out).contains(want), "{}", stderr(&out));
        assert!(
            std::fs::read_to_string(&got).unwrap_or_default().is_empty(),
            "no command reached the foreign listener"
        );
    }
}

#[test]
fn a_reader_that_goes_away_ends_dictation() {
    use std::io::BufRead;
    model(sotto::models::WHISPER_GGML);
    let dir = tempfile::tempdir().unwrap();
    let jfk = dir.path().join("jfk22.wav");
    sox(&jfk_wav(), &["-r", "22050"], &jfk);
    let gap = silence(dir.path(), "1");
    let input = dir.path().join("twice.wav");
    concat(&[jfk.clone(), gap.clone(), jfk, gap], &input);
    // In real time: ~24 s of input, the first line after ~8 s.
    let t0 = std::time::Instant::now();
    let mut child = sotto()
        .args(["dictate", "--input"])
        .arg(&input)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(!first.trim().is_empty());
    // The reader is gone (its end of the pipe dropped above), as `| head -1` does.
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "still running long after its reader went away"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(141), "as if killed by SIGPIPE");
    assert!(
        t0.elapsed() < Duration::from_secs(18),
        "ended well before its 24 s of input: {:?}",
        t0.elapsed()
    );
}

// --- What dictation does to the text: vocabulary, spoken formatting, replacements, history.

/// Ten sentences with names Whisper tiny.en does not know, spoken by espeak-ng; the names
/// are the vocabulary. Held back: nothing in sotto knows these sentences.
const RARE: [&str; 10] = [
    "Deploy the service to Kubernetes before noon.",
    "Doctor Nguyen will review the results tomorrow.",
    "Sotto runs entirely on your own computer.",
    "The Kubernetes cluster needs another node.",
    "Please send the report to Nguyen and Sotto.",
    "Our Kubernetes upgrade finished last night.",
    "Ask Nguyen about the new budget.",
    "Sotto transcribed the whole meeting.",
    "Kubernetes restarts a pod when it fails.",
    "Nguyen and Sotto met at the conference.",
];
const NAMES: [&str; 3] = ["Kubernetes", "Nguyen", "Sotto"];

#[test]
fn a_vocabulary_gets_rare_names_right_more_often() {
    model(sotto::models::WHISPER_GGML);
    let dir = tempfile::tempdir().unwrap();
    let gap = silence(dir.path(), "1.5");
    let mut parts = vec![gap.clone()];
    for (i, s) in RARE.iter().enumerate() {
        let p = dir.path().join(format!("r{i}.wav"));
        espeak(s, &p);
        parts.extend([p, gap.clone()]);
    }
    let input = dir.path().join("rare.wav");
    concat(&parts, &input);
    let vocabulary = dir.path().join("vocabulary.txt");
    std::fs::write(&vocabulary, "# names\nKubernetes\nNguyen\nSotto\n").unwrap();
    let dictate = |extra: &[&std::ffi::OsStr]| {
        let t0 = std::time::Instant::now();
        let out = run(sotto()
            .args(["dictate", "--fast", "--no-history", "--input"])
            .arg(&input)
            .args(extra));
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        let named = NAMES.iter().map(|n| text.matches(n).count()).sum::<usize>();
        (wer(&RARE.join(" "), &text), named, t0.elapsed(), text)
    };
    let (wer_without, named_without, t_without, plain) = dictate(&[]);
    let (wer_with, named_with, t_with, helped) =
        dictate(&["--vocabulary".as_ref(), vocabulary.as_os_str()]);
    eprintln!(
        "rare names: WER {wer_without:.3} without the vocabulary, {wer_with:.3} with; names right \
         {named_without}/15 without, {named_with}/15 with; time {t_without:?} vs {t_with:?}\n\
         without:\n{plain}\nwith:\n{helped}"
    );
    assert!(
        named_with > named_without,
        "names right: {named_with} with the vocabulary, {named_without} without"
    );
    // The names are what the vocabulary is for; the rest of the text must not suffer for it.
    assert!(
        wer_with <= wer_without + 0.05,
        "WER {wer_with} with, {wer_without} without"
    );
}

#[test]
fn spoken_punctuation_and_new_line_become_what_they_name() {
    model(sotto::models::WHISPER_GGML);
    let dir = tempfile::tempdir().unwrap();
    // Piper's voice: tiny.en hears espeak-ng's "comma" as "comment" whatever the speed. The
    // words are "hello comma world period new line second line"; written with full stops,
    // Piper pauses where a speaker would (run together, tiny.en heard 3 of 6 syntheses
    // right; like this, 6 of 6). Piper's synthesis is not the same twice, so each attempt
    // speaks it anew: three mishearings in a row fail the test.
    let gap = silence(dir.path(), "1");
    let input = dir.path().join("input.wav");
    let said_words = words("hello comma world period new line second line");
    let mut heard_right = false;
    for attempt in 1..=3 {
        let said = dir.path().join("said.wav");
        voice("Hello comma world period. New line. Second line.", &said);
        concat(&[gap.clone(), said, gap.clone()], &input);
        let text_file = dir.path().join(format!("notes{attempt}.txt"));
        let out = run(sotto()
            .args(["dictate", "--fast", "--jsonl", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&text_file));
        assert!(out.status.success(), "{}", stderr(&out));
        let lines: Vec<serde_json::Value> = stdout(&out)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let heard: Vec<String> = lines
            .iter()
            .map(|l| {
                l.get("heard")
                    .unwrap_or(&l["text"])
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        if words(&heard.join(" ")) != said_words {
            eprintln!("attempt {attempt}: Whisper heard {heard:?}; trying again");
            continue;
        }
        let texts: Vec<&str> = lines.iter().map(|l| l["text"].as_str().unwrap()).collect();
        assert_eq!(
            texts.join("\n"),
            "Hello, world.\nSecond line",
            "heard {heard:?}"
        );
        assert_eq!(
            std::fs::read_to_string(&text_file).unwrap().lines().count(),
            lines.len(),
            "one JSON line per utterance in the file"
        );
        heard_right = true;
        break;
    }
    assert!(heard_right, "Whisper misheard the phrase three times");
    // The history has it; `sotto history` shows it.
    let shown = run(sotto().args(["history", "--last", "1", "--json"]));
    assert!(shown.status.success(), "{}", stderr(&shown));
    let entry: serde_json::Value = serde_json::from_str(stdout(&shown).trim()).unwrap();
    assert_eq!(entry["text"], "Hello, world.\nSecond line");
    // Off, the words stay words.
    let out = run(sotto()
        .args([
            "dictate",
            "--fast",
            "--no-spoken-formatting",
            "--no-history",
            "--input",
        ])
        .arg(&input));
    assert!(
        stdout(&out).to_lowercase().contains("comma"),
        "{}",
        stdout(&out)
    );
}

/// Piper saying "The meeting is on Monday.", "Scratch that.", "The meeting is on Tuesday."
/// with 1.5 s gaps.
fn scratch_that_said(dir: &Path) -> std::path::PathBuf {
    let gap = silence(dir, "1.5");
    let mut parts = vec![gap.clone()];
    for (i, s) in [
        "The meeting is on Monday.",
        "Scratch that.",
        "The meeting is on Tuesday.",
    ]
    .iter()
    .enumerate()
    {
        let p = dir.join(format!("s{i}.wav"));
        voice(s, &p);
        parts.extend([p, gap.clone()]);
    }
    let input = dir.join("input.wav");
    concat(&parts, &input);
    input
}

#[test]
fn scratch_that_withdraws_the_last_utterance_from_the_output_file() {
    model(sotto::models::WHISPER_GGML);
    let dir = tempfile::tempdir().unwrap();
    let input = scratch_that_said(dir.path());
    let text_file = dir.path().join("notes.txt");
    std::fs::write(&text_file, "Kept from before.\n").unwrap();
    let out = run(sotto()
        .args(["dictate", "--fast", "--no-history", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&text_file));
    assert!(out.status.success(), "{}", stderr(&out));
    let kept = std::fs::read_to_string(&text_file).unwrap();
    assert!(kept.starts_with("Kept from before.\n"), "{kept}");
    assert!(!kept.contains("Monday"), "{kept}");
    assert!(kept.contains("Tuesday"), "{kept}");
}

#[test]
fn replacements_apply_in_order_and_a_bad_rule_names_its_line_before_loading() {
    model(sotto::models::WHISPER_GGML);
    let dir = tempfile::tempdir().unwrap();
    let said = dir.path().join("said.wav");
    espeak("Please open the window.", &said);
    let rules = dir.path().join("rules.txt");
    std::fs::write(
        &rules,
        "# mine\nwindow => door\n/\\bdoor\\b/ => front door\n",
    )
    .unwrap();
    let out = run(sotto()
        .args(["dictate", "--fast", "--no-history", "--input"])
        .arg(&said)
        .arg("--replacements")
        .arg(&rules));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("open the front door"),
        "{}",
        stdout(&out)
    );
    std::fs::write(&rules, "window => door\nthis line has no arrow\n").unwrap();
    let t0 = std::time::Instant::now();
    let out = run(sotto()
        .args(["dictate", "--fast", "--input"])
        .arg(&said)
        .arg("--replacements")
        .arg(&rules));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{} line 2:", rules.display())),
        "{}",
        stderr(&out)
    );
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "refused before the model loads"
    );
}
