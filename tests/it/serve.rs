//! `sotto serve` against the real `wyoming` Python client library (tests/wyoming/client.py,
//! run in the virtual environment scripts/setup makes): describe, transcription at any audio
//! format, synthesis (whole and streamed), handling, many clients at once, and clients that
//! send garbage or vanish.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

/// The Python of the virtual environment holding `wyoming` (scripts/setup makes it).
fn client_python() -> PathBuf {
    let p = repo().join(".venv-tests/bin/python");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/setup (it installs the wyoming client library for these \
         tests)",
        p.display()
    );
    p
}

/// Runs tests/wyoming/client.py against `port` and parses what it prints.
fn client(port: u16, args: &[&str]) -> Value {
    let out = run(Command::new(client_python())
        .arg(repo().join("tests/wyoming/client.py"))
        .arg(port.to_string())
        .args(args));
    assert!(
        out.status.success(),
        "client {args:?} failed: {}",
        stderr(&out)
    );
    serde_json::from_str(stdout(&out).trim())
        .unwrap_or_else(|e| panic!("client {args:?} printed {:?}: {e}", stdout(&out)))
}

fn client_spawn(port: u16, args: &[&str]) -> Child {
    Command::new(client_python())
        .arg(repo().join("tests/wyoming/client.py"))
        .arg(port.to_string())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs")
}

fn client_wait(child: Child) -> Value {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "client failed: {}", stderr(&out));
    serde_json::from_str(stdout(&out).trim()).unwrap()
}

/// A running `sotto serve` on a free port; killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(extra: &[&str]) -> Self {
        model(sotto::models::WHISPER_GGML);
        let mut child = sotto()
            .args(["serve", "--uri", "tcp://127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sotto runs");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(180)) {
                Ok(line) => {
                    if let Some(rest) = line.split("on tcp://127.0.0.1:").nth(1) {
                        let port = rest.split_whitespace().next().unwrap().parse().unwrap();
                        // Keep draining stderr so the server never blocks on it.
                        std::thread::spawn(move || for _ in rx {});
                        return Server { child, port };
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("sotto serve did not start:\n{}", seen.join("\n"));
                }
            }
        }
    }

    fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "sotto serve exited"
        );
        let info = client(self.port, &["describe"]);
        assert_eq!(info["asr"].as_array().map(Vec::len), Some(1), "{info}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn jfk_48k_stereo(dir: &Path) -> PathBuf {
    let p = dir.join("jfk-48k-stereo.wav");
    sox(&jfk_wav(), &["-r", "48000", "-c", "2"], &p);
    p
}

#[test]
fn serve_describes_each_program_with_its_models_openness() {
    let mut server = Server::start(&[]);
    let info = client(server.port, &["describe"]);
    let asr = &info["asr"][0];
    assert_eq!(asr["installed"], true);
    assert_eq!(asr["supports_transcript_streaming"], true);
    let whisper = &asr["models"][0];
    assert_eq!(whisper["languages"], serde_json::json!(["en"]), "{info}");
    let d = whisper["description"].as_str().unwrap();
    // The truth about Whisper's weights: open, but not open source.
    assert!(
        d.contains("open-weight (OSAID 1.0)") && d.contains("MOF"),
        "{d}"
    );
    assert!(
        d.contains("exception"),
        "admitted by the user's exception: {d}"
    );
    let voice = &info["tts"][0]["voices"][0];
    let d = voice["description"].as_str().unwrap();
    assert!(d.contains("open-source (OSAID 1.0)"), "{d}");
    assert_eq!(voice["languages"], serde_json::json!(["en_US"]));
    let llm = &info["handle"][0]["models"][0];
    assert!(
        llm["description"]
            .as_str()
            .unwrap()
            .starts_with("SmolLM2-135M-Instruct: open-source (OSAID 1.0)"),
        "{llm}"
    );
    assert_eq!(llm["attribution"]["name"], "Hugging Face");
    assert_eq!(llm["version"], "1.0", "{llm}");
    server.assert_alive();
}

#[test]
fn serve_transcribes_jfk_word_for_word_at_16k_mono_and_48k_stereo() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&["--asr"]);
    let stereo = jfk_48k_stereo(dir.path());
    // Home Assistant may name the language with its region: Whisper's code is taken from it.
    for (wav, language) in [(jfk_wav(), "en"), (stereo, "en-US")] {
        let r = client(
            server.port,
            &["transcribe", wav.to_str().unwrap(), "--language", language],
        );
        let text = r["text"].as_str().unwrap();
        assert_eq!(words(text), words(&jfk_txt()), "{}: {r}", wav.display());
        // The streaming form carries the same text, in the protocol's order.
        assert_eq!(r["chunks"].as_str(), Some(text));
        let events: Vec<&str> = r["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(events.first(), Some(&"transcript-start"));
        assert_eq!(
            &events[events.len() - 2..],
            ["transcript", "transcript-stop"]
        );
    }
    // Only what was asked for is offered.
    let info = client(server.port, &["describe"]);
    assert_eq!(info["tts"], serde_json::json!([]));
    assert_eq!(info["handle"], serde_json::json!([]));
}

#[test]
fn serve_speaks_a_sentence_that_transcribes_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&["--asr", "--tts"]);
    let said = "The library opens at nine in the morning on weekdays.";
    // Piper differs run to run: the best of three renditions is judged.
    let mut best = f64::MAX;
    for i in 0..3 {
        let wav = dir.path().join(format!("said-{i}.wav"));
        let s = client(server.port, &["synthesize", said, wav.to_str().unwrap()]);
        assert_eq!(s["rate"], 22050, "{s}");
        assert!(s["audio_s"].as_f64().unwrap() > 1.5, "{s}");
        let heard = client(server.port, &["transcribe", wav.to_str().unwrap()]);
        best = best.min(wer(said, heard["text"].as_str().unwrap()));
        if best <= 0.1 {
            break;
        }
    }
    assert!(best <= 0.1, "WER {best}");
}

#[test]
fn serve_streams_synthesis_audio_for_the_first_sentence_before_the_last_is_sent() {
    let server = Server::start(&["--tts"]);
    let r = client(
        server.port,
        &[
            "stream",
            "The first sentence comes early.",
            "The second one follows it.",
            "And this is the last sentence.",
        ],
    );
    assert_eq!(r["first_audio_before_last_sent"], true, "{r}");
    // One audio stream per sentence, then synthesize-stopped; the compatibility `synthesize`
    // the client also sent is not spoken again.
    assert_eq!(r["audio_starts"], 3, "{r}");
    assert_eq!(r["audio_stops"], 3, "{r}");
    assert_eq!(r["stopped"], true, "{r}");
}

#[test]
fn serve_handles_a_voice_command_once_and_answers_a_question_in_one_conversation() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let lamp = dir.path().join("lamp.log");
    let program = dir.path().join("lamp");
    std::fs::write(
        &program,
        format!("#!/bin/sh\necho \"$1\" >> '{}'\n", lamp.display()),
    )
    .unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let commands = dir.path().join("commands.toml");
    std::fs::write(
        &commands,
        format!(
            "[[command]]\nname = \"lamp-on\"\nphrases = [\"turn on the lamp\"]\n\
             run = [\"{}\", \"on\"]\nreply = \"The lamp is on.\"\n",
            program.display()
        ),
    )
    .unwrap();
    let actions = dir.path().join("actions.jsonl");
    let server = Server::start(&[
        "--handle",
        "--commands",
        commands.to_str().unwrap(),
        "--action-log",
        actions.to_str().unwrap(),
    ]);
    let r = client(
        server.port,
        &[
            "handle",
            "Turn on the lamp.",
            "What is the capital of France?",
        ],
    );
    let replies = r["replies"].as_array().unwrap();
    assert_eq!(replies[0]["type"], "handled", "{r}");
    assert_eq!(replies[0]["text"], "The lamp is on.", "{r}");
    assert_eq!(
        std::fs::read_to_string(&lamp).unwrap(),
        "on\n",
        "ran exactly once"
    );
    let log = std::fs::read_to_string(&actions).unwrap();
    assert!(log.contains("\"finished\""), "{log}");
    assert_eq!(replies[1]["type"], "handled", "{r}");
    let answer = replies[1]["text"].as_str().unwrap();
    assert!(answer.contains("Paris"), "{r}");
    // Streamed as it was written, and the same conversation throughout.
    assert_eq!(replies[1]["chunks"].as_str().map(str::trim), Some(answer));
    assert_eq!(replies[0]["context"], replies[1]["context"], "{r}");
    assert!(replies[0]["context"]["conversation_id"].is_string(), "{r}");
}

#[test]
fn serve_gives_eight_clients_at_once_their_own_transcripts() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&["--asr"]);
    let sentences = [
        "Please set a timer for ten minutes.",
        "The train to Boston leaves from platform four.",
        "Remind me to buy milk and bread tomorrow.",
        "What is the weather like in Paris today?",
        "Turn off the lights in the kitchen.",
        "My favorite color is green.",
    ];
    let mut wavs = vec![jfk_wav(), jfk_48k_stereo(dir.path())];
    for (i, s) in sentences.iter().enumerate() {
        let p = dir.path().join(format!("s{i}.wav"));
        espeak(s, &p);
        wavs.push(p);
    }
    // Each clip alone first: what the one engine makes of it.
    let alone: Vec<String> = wavs
        .iter()
        .map(|w| {
            client(server.port, &["transcribe", w.to_str().unwrap()])["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let args: Vec<&str> = std::iter::once("many")
        .chain(wavs.iter().map(|p| p.to_str().unwrap()))
        .collect();
    let r = client(server.port, &args);
    let texts: Vec<&str> = r["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap_or(""))
        .collect();
    assert_eq!(texts.len(), 8, "{r}");
    // All at once, every client gets its own clip's transcript, the same as alone.
    assert_eq!(texts, alone, "{r}");
    assert_eq!(words(texts[0]), words(&jfk_txt()), "{r}");
    assert_eq!(words(texts[1]), words(&jfk_txt()), "{r}");
    for (s, t) in sentences.iter().zip(&texts[2..]) {
        // tiny.en on espeak: a word or two may be off, but it is this sentence.
        assert!(wer(s, t) <= 0.35, "{s:?} came back as {t:?}");
    }
}

#[test]
fn bad_frames_and_vanishing_clients_leave_the_server_serving() {
    let mut server = Server::start(&["--asr"]);
    for what in ["garbage", "truncated", "huge"] {
        let r = client(server.port, &["raw", what]);
        assert_eq!(r["events"][0]["type"], "error", "{what}: {r}");
        assert_eq!(r["events"][0]["data"]["code"], "bad-frame", "{what}: {r}");
        assert_eq!(r["closed"], true, "{what}: {r}");
        server.assert_alive();
    }
    let r = client(server.port, &["raw", "unknown"]);
    assert_eq!(r["events"][0]["data"]["code"], "unknown-event", "{r}");
    // Audio the server will not hold (384 kHz): refused by name, the connection kept.
    let r = client(server.port, &["raw", "bad-rate"]);
    assert_eq!(r["events"][0]["data"]["code"], "bad-audio", "{r}");
    assert!(
        r["events"][0]["data"]["text"]
            .as_str()
            .unwrap()
            .contains("384000 Hz"),
        "{r}"
    );

    // A client killed mid-utterance while another transcribes: the other gets its text.
    let good = client_spawn(server.port, &["transcribe", jfk_wav().to_str().unwrap()]);
    for _ in 0..3 {
        client(server.port, &["raw", "kill-mid-utterance"]);
    }
    let r = client_wait(good);
    assert_eq!(words(r["text"].as_str().unwrap()), words(&jfk_txt()), "{r}");
    server.assert_alive();
}

#[test]
fn a_client_that_never_reads_its_audio_does_not_stall_the_voice_for_others() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&["--tts"]);
    let slow = client_spawn(server.port, &["raw", "slow-reader"]);
    // Let it fill its socket and the server's write buffer.
    std::thread::sleep(Duration::from_secs(3));
    let wav = dir.path().join("other.wav");
    let t0 = std::time::Instant::now();
    let r = client(
        server.port,
        &[
            "synthesize",
            "Another client is still served.",
            wav.to_str().unwrap(),
        ],
    );
    // Served after at most the write timeout (10 s) of the slow one, not never.
    assert!(t0.elapsed() < Duration::from_secs(40), "{:?}", t0.elapsed());
    assert!(r["audio_s"].as_f64().unwrap() > 1.0, "{r}");
    let mut slow = slow;
    let _ = slow.kill();
    let _ = slow.wait();
}

#[test]
fn zeroconf_announces_the_server_as_home_assistant_discovers_it() {
    let server = Server::start(&["--asr", "--zeroconf", "sotto-zeroconf-test"]);
    let r = client(0, &["discover", "sotto-zeroconf-test"]);
    assert_eq!(
        r["found"]["sotto-zeroconf-test._wyoming._tcp.local."], server.port,
        "{r}"
    );
}

#[test]
fn a_client_over_the_limit_is_told_busy_and_the_others_are_served() {
    let server = Server::start(&["--asr", "--max-clients", "1"]);
    let mut first = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    // The first connection is counted once the server has accepted it.
    first
        .write_all(b"{\"type\": \"ping\", \"data\": {\"text\": \"hi\"}}\n")
        .unwrap();
    let mut line = String::new();
    BufReader::new(first.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("pong"), "{line}");
    let mut second = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reply = Vec::new();
    second.read_to_end(&mut reply).unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.contains("busy"), "{reply}");
    drop(first);
    // With the first gone, a client is served again (the slot is freed on disconnect).
    let mut served = false;
    for _ in 0..50 {
        let r = run(Command::new(client_python())
            .arg(repo().join("tests/wyoming/client.py"))
            .arg(server.port.to_string())
            .arg("describe"));
        if r.status.success() {
            served = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(served, "no client was served after the first left");
}

#[test]
fn sigterm_stops_the_server_promptly_even_with_a_client_connected() {
    let mut server = Server::start(&["--asr"]);
    let _idle = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let pid = server.child.id().to_string();
    let t0 = std::time::Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_will_not_start_with_a_model_below_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    // A fresh configuration: no exception for the open-weight Whisper tiny.en.
    let out = run(sotto_in(dir.path()).args(["serve", "--uri", "tcp://127.0.0.1:0", "--asr"]));
    assert_eq!(
        out.status.code(),
        Some(sotto::audit::EXIT_REFUSED as i32),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("startup stopped by the openness audit"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("serving"), "{}", stderr(&out));
}

#[test]
fn serve_rejects_a_bad_uri_by_name() {
    let out = run(sotto().args(["serve", "--uri", "http://127.0.0.1:80"]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("http://127.0.0.1:80"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn home_assistants_own_wyoming_integration_transcribes_and_speaks_through_serve() {
    let python = repo().join(".venv-ha/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/setup --with-test-clients (Home Assistant's Wyoming \
         integration is the second real client of these tests)",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&["--asr", "--tts"]);
    // Piper differs run to run: the best of three renditions is judged.
    let mut best = f64::MAX;
    for attempt in 0..3 {
        let spoken = dir.path().join(format!("ha-{attempt}.wav"));
        let out = run(Command::new(&python)
            .arg(repo().join("tests/wyoming/home_assistant.py"))
            .arg(server.port.to_string())
            .arg(jfk_wav())
            .arg(&spoken));
        assert!(out.status.success(), "{}", stderr(&out));
        let r: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(r["platforms"], serde_json::json!(["stt", "tts"]), "{r}");
        assert_eq!(r["stt_result"], "SpeechResultState.SUCCESS", "{r}");
        assert_eq!(
            words(r["stt_text"].as_str().unwrap()),
            words(&jfk_txt()),
            "{r}"
        );
        assert_eq!(r["tts_languages"], serde_json::json!(["en_US"]), "{r}");
        // Home Assistant lists the voice by its description: the audit's verdict shows there.
        assert!(
            r["tts_voices"][0]
                .as_str()
                .unwrap()
                .contains("open-source (OSAID 1.0)"),
            "{r}"
        );
        assert_eq!(r["tts_kind"], "wav", "{r}");
        let heard = client(server.port, &["transcribe", spoken.to_str().unwrap()]);
        let text = heard["text"].as_str().unwrap();
        best = best.min(wer(
            "The library opens at nine in the morning on weekdays.",
            text,
        ));
        if best <= 0.1 {
            break;
        }
    }
    assert!(best <= 0.1, "WER {best}");
}
