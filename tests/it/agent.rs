//! `sotto agent`: spoken question in, spoken answer out — through files and through real
//! (PulseAudio) devices; barge-in; voice commands and the action log.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use sotto::agent::{self, Settings, StageError, Stages, TurnOutcome, TurnRecord};

use crate::util::*;

fn question_wav() -> PathBuf {
    let p = repo().join("assets/question.wav");
    assert!(p.is_file(), "{} is missing", p.display());
    p
}

fn turns(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

fn rms(samples: &[f32]) -> f32 {
    (samples.iter().map(|s| s * s).sum::<f32>() / samples.len().max(1) as f32).sqrt()
}

fn read_wav(p: &Path) -> (Vec<f32>, u32) {
    let clip = sotto::audio::read_wav(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (clip.samples, clip.sample_rate_hz)
}

/// The latency steps of a turn, in the order they must happen.
fn ordered_latencies(turn: &serde_json::Value) -> Vec<u64> {
    let l = &turn["latency"];
    [
        "vad_end_ms",
        "transcript_ms",
        "first_token_ms",
        "first_clause_ms",
        "first_audio_ms",
    ]
    .iter()
    .map(|k| {
        l[*k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} missing in {turn}"))
    })
    .collect()
}

#[test]
fn a_spoken_question_from_a_file_is_answered_aloud_into_a_file_with_metrics() {
    model(sotto::models::WHISPER_GGML);
    let dir = tempfile::tempdir().unwrap();
    let reply = dir.path().join("reply.wav");
    let metrics = dir.path().join("metrics.jsonl");
    let out = run(sotto()
        .args(["agent", "--input"])
        .arg(question_wav())
        .args([
            "--output".as_ref(),
            reply.as_os_str(),
            "--metrics".as_ref(),
            metrics.as_os_str(),
            "--action-log".as_ref(),
            dir.path().join("actions.jsonl").as_os_str(),
        ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("you:   What is the capital of France?"),
        "{text}"
    );
    assert!(text.contains("sotto: "), "{text}");
    assert!(text.contains("first audio"), "latencies printed: {text}");

    let t = turns(&metrics);
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[0]["outcome"], "answered");
    let steps = ordered_latencies(&t[0]);
    assert!(
        steps.windows(2).all(|w| w[0] <= w[1]),
        "end of speech → VAD end → transcript → first token → first clause → first audio: {steps:?}"
    );
    assert!(t[0]["stages"]["stt_ms"].as_u64().is_some());

    // The reply was spoken: non-silent audio whose words are the printed reply, on topic.
    let (samples, _) = read_wav(&reply);
    assert!(rms(&samples) > 0.01, "the reply is silent");
    let heard = stdout(&run(sotto().arg("transcribe").arg(&reply)));
    let printed = t[0]["reply"].as_str().unwrap();
    assert!(
        heard.to_lowercase().contains("paris"),
        "heard {heard:?}, printed {printed:?}"
    );
    assert!(
        wer(printed, &heard) <= 0.25,
        "the audio says what was printed: {printed:?} vs {heard:?}"
    );
}

#[test]
fn the_agent_answers_through_real_devices() {
    model(sotto::models::WHISPER_GGML);
    require_tool("paplay");
    require_tool("parec");
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("metrics.jsonl");
    // PulseAudio null sink `v`: the agent hears its monitor (the default source) and speaks
    // to the sink (the default output); parec records everything played into it.
    let recording = dir.path().join("sink.wav");
    let mut parec = Command::new("parec")
        .args(["-d", "v.monitor", "--file-format=wav"])
        .arg(&recording)
        .spawn()
        .expect("parec runs");
    let mut agent = sotto()
        .args(["agent", "--turns", "1", "--metrics"])
        .arg(&metrics)
        .arg("--action-log")
        .arg(dir.path().join("actions.jsonl"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Speak only once the agent listens (loading the models takes seconds).
    let log = wait_for_line(
        agent.stderr.take().unwrap(),
        "listening",
        Duration::from_secs(90),
    );
    std::thread::sleep(Duration::from_millis(500));
    let played = Command::new("paplay")
        .args(["-d", "v"])
        .arg(question_wav())
        .status()
        .unwrap();
    assert!(played.success(), "paplay failed: is PulseAudio running?");
    let out = wait_with_timeout(agent, Duration::from_secs(60));
    let _ = Command::new("kill")
        .args(["-INT", &parec.id().to_string()])
        .status();
    let _ = parec.wait();
    assert!(out.status.success(), "{}", log.join().unwrap());
    let t = turns(&metrics);
    assert_eq!(t.len(), 1, "{}", stdout(&out));
    assert_eq!(t[0]["outcome"], "answered", "{}", t[0]);
    assert!(
        t[0]["transcript"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("capital of france"),
        "{}",
        t[0]
    );
    // What went into the sink: the question, then sotto's answer ("Paris" is only in the
    // answer).
    let (samples, _) = read_wav(&recording);
    assert!(rms(&samples) > 0.005, "nothing was played into the sink");
    let heard = stdout(&run(sotto().arg("transcribe").arg(&recording)));
    assert!(
        heard.to_lowercase().contains("paris"),
        "the spoken answer is on topic: {heard:?}"
    );
}

/// Reads `stream` until a line contains `needle` (panics after `limit`); the rest of the
/// stream is drained by a thread whose result is everything read.
fn wait_for_line(
    stream: impl std::io::Read + Send + 'static,
    needle: &'static str,
    limit: Duration,
) -> std::thread::JoinHandle<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(stream)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains(needle) {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    assert!(
        rx.recv_timeout(limit).is_ok(),
        "sotto never printed {needle:?}"
    );
    h
}

fn wait_with_timeout(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    let t0 = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("sotto agent did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

/// A program for commands to run: appends its arguments, one per line, to `log`.
fn recorder_program(dir: &Path, log: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("record-args");
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\" >> '{}'; done\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn a_spoken_command_runs_its_action_once_and_an_unknown_request_runs_none() {
    model(sotto::models::WHISPER_GGML);
    let dir = tempfile::tempdir().unwrap();
    let lamp = dir.path().join("lamp.log");
    let program = recorder_program(dir.path(), &lamp);
    let commands = dir.path().join("commands.toml");
    std::fs::write(
        &commands,
        format!(
            r#"
[[command]]
name = "lamp-on"
phrases = ["turn on the lamp", "switch the lamp on"]
run = ["{}", "lamp", "on"]
reply = "The lamp is on."
"#,
            program.display()
        ),
    )
    .unwrap();
    let mut parts = Vec::new();
    for (i, text) in ["Turn on the lamp.", "What is the weather like on Mars?"]
        .iter()
        .enumerate()
    {
        let p = dir.path().join(format!("u{i}.wav"));
        espeak(text, &p);
        parts.push(p);
        parts.push(silence(dir.path(), "9"));
    }
    let input = dir.path().join("input.wav");
    concat(&parts, &input);
    let actions = dir.path().join("actions.jsonl");
    let metrics = dir.path().join("metrics.jsonl");
    let out = run(sotto()
        .args(["agent", "--input"])
        .arg(&input)
        .arg("--commands")
        .arg(&commands)
        .arg("--action-log")
        .arg(&actions)
        .arg("--metrics")
        .arg(&metrics)
        .arg("--output")
        .arg(dir.path().join("out.wav")));
    assert!(out.status.success(), "{}", stderr(&out));
    let t = turns(&metrics);
    assert_eq!(t.len(), 2, "{}", stdout(&out));
    assert_eq!(t[0]["outcome"], "command", "{}", t[0]);
    assert_eq!(t[0]["command"]["command"], "lamp-on");
    assert_eq!(t[0]["reply"], "The lamp is on.");
    assert_eq!(t[1]["outcome"], "answered", "{}", t[1]);
    // The action ran exactly once, with its fixed arguments.
    assert_eq!(std::fs::read_to_string(&lamp).unwrap(), "lamp\non\n");
    let log = turns(&actions);
    let stages: Vec<&str> = log.iter().map(|l| l["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["requested", "started", "finished"], "{log:?}");
    assert!(log.iter().all(|l| l["command"] == "lamp-on"));
    assert_eq!(log[2]["result"]["status"], "ok");
    assert_eq!(
        log[2]["arguments"],
        serde_json::json!([program.display().to_string(), "lamp", "on"])
    );
    assert!(
        log[0]["transcript"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("lamp")
    );
    assert!(log[0]["time"].as_str().unwrap().ends_with('Z'));
}

// --- Fake stages: for the wiring of barge-in and for what commands may run. -------------

/// Transcripts in order, one per utterance.
struct Script(Vec<&'static str>);

impl agent::Transcriber for Script {
    fn transcribe(&mut self, _: &[f32]) -> Result<String, StageError> {
        Ok(if self.0.is_empty() {
            String::new()
        } else {
            self.0.remove(0).to_string()
        })
    }
}

/// A slow talker: `sentences` sentences, a word every 20 ms, stops when cancelled.
struct Talker {
    sentences: usize,
}

impl agent::Responder for Talker {
    fn respond(
        &mut self,
        request: &str,
        cancel: &AtomicBool,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<agent::ReplyStats, StageError> {
        // "Stop" gets a one-sentence answer, so the session ends soon after.
        let sentences = if request.starts_with("Stop") {
            1
        } else {
            self.sentences
        };
        for _ in 0..sentences {
            for word in [
                "Once ", "upon ", "a ", "time, ", "there ", "was ", "a ", "story. ",
            ] {
                if cancel.load(std::sync::atomic::Ordering::SeqCst) {
                    return Ok(agent::ReplyStats::default());
                }
                std::thread::sleep(Duration::from_millis(20));
                on_text(word);
            }
        }
        Ok(agent::ReplyStats::default())
    }

    fn choose(&mut self, _: &str, _: &[String]) -> Result<Option<usize>, StageError> {
        Ok(None)
    }
}

/// Each turn's audio is a constant level: 0.1 × its number, so the output says whose it is.
struct Levels {
    turn: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl agent::Voice for Levels {
    fn synthesize(&mut self, _: &str) -> Result<(Vec<f32>, u32), StageError> {
        let level = 0.1 * self.turn.load(std::sync::atomic::Ordering::SeqCst) as f32;
        Ok((vec![level; 8_000], 16_000)) // half a second per clause
    }
}

fn listen(input: &Path) -> sotto::pipeline::listen::ListenOptions {
    sotto::pipeline::listen::ListenOptions {
        source: sotto::pipeline::listen::Source::Clip {
            clip: Arc::new(sotto::audio::read_wav(input).unwrap()),
            fast: false,
        },
        detector: sotto::vad::DetectorKind::Webrtc,
        aggressiveness: 2,
        segmenter: sotto::vad::SegmenterConfig::default(),
        ptt: None,
        ptt_key: None,
        speculate: false,
        partials_every: None,
    }
}

#[test]
fn barge_in_stops_playback_at_once_and_nothing_of_the_cancelled_turn_plays_after() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.wav"), dir.path().join("b.wav"));
    espeak("Tell me a long story.", &a);
    espeak("Stop, that is enough.", &b);
    let input = dir.path().join("input.wav");
    concat(
        &[a, silence(dir.path(), "4"), b, silence(dir.path(), "4")],
        &input,
    );
    let out = dir.path().join("out.wav");
    // The voice marks turn 1's story at level 0.1 and turn 2's at 0.2; the coordinator's
    // live turn is what the fake voice reads to know which turn it speaks for.
    let turn = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let out_path = out.clone();
    let stages = Stages {
        transcriber: Box::new(Script(vec![
            "Tell me a long story.",
            "Stop, that is enough.",
        ])),
        responder: Box::new(Talker { sentences: 40 }),
        voice: Box::new(Levels { turn: turn.clone() }),
        output: Box::new(move |started| {
            Ok(Box::new(sotto::playback::Recorder::with_start(
                &out_path, 16_000, started,
            )) as Box<dyn sotto::playback::Output>)
        }),
    };
    let settings = Settings {
        barge_in: true,
        max_sentences: 100,
        max_turns: Some(2),
        ..Settings::default()
    };
    let mut records: Vec<TurnRecord> = Vec::new();
    let turn_for_cb = turn.clone();
    agent::run(
        listen(&input),
        stages,
        settings,
        Arc::new(AtomicBool::new(false)),
        |r| {
            records.push(r.clone());
            turn_for_cb.store(2, std::sync::atomic::Ordering::SeqCst);
        },
    )
    .unwrap();
    assert_eq!(records.len(), 2, "{records:#?}");
    let cut = &records[0];
    assert_eq!(cut.outcome, TurnOutcome::Interrupted, "{cut:#?}");
    let stop_ms = cut.barge_in_stop_ms.expect("the stop was confirmed");
    eprintln!("barge-in: playback stopped {stop_ms} ms after speech was detected");
    assert!(
        stop_ms <= 100,
        "playback stopped {stop_ms} ms after speech was detected"
    );
    let interrupted_at = cut.interrupted_at_s.unwrap();

    // The output as a listener heard it: turn 1 (level 0.1) up to the barge-in, never after.
    let (samples, rate) = read_wav(&out);
    let is_level = |s: f32, level: f32| (s - level).abs() < 0.01;
    let first_1 = samples
        .iter()
        .position(|s| is_level(*s, 0.1))
        .expect("turn 1 played");
    let last_1 = samples.iter().rposition(|s| is_level(*s, 0.1)).unwrap();
    let secs = |i: usize| i as f64 / rate as f64;
    assert!(
        secs(last_1 - first_1) > 1.0,
        "turn 1 played for a while before the barge-in"
    );
    assert!(
        secs(last_1) <= interrupted_at + 0.1,
        "turn 1 audio at {:.3} s, after the barge-in at {interrupted_at:.3} s + 100 ms",
        secs(last_1)
    );
    // And the next turn was answered after it.
    assert_eq!(records[1].outcome, TurnOutcome::Answered);
    let first_2 = samples
        .iter()
        .position(|s| is_level(*s, 0.2))
        .expect("turn 2 played");
    assert!(first_2 > last_1);
}

#[test]
fn speech_while_sotto_speaks_without_barge_in_is_counted_not_lost_silently() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.wav"), dir.path().join("b.wav"));
    espeak("Tell me a long story.", &a);
    espeak("Stop, that is enough.", &b);
    let input = dir.path().join("input.wav");
    concat(
        &[a, silence(dir.path(), "4"), b, silence(dir.path(), "3")],
        &input,
    );
    let out = dir.path().join("out.wav");
    let stages = Stages {
        transcriber: Box::new(Script(vec![
            "Tell me a long story.",
            "Stop, that is enough.",
        ])),
        // Twelve sentences at half a second a clause: the reply still plays when "Stop"
        // is said four seconds after the question.
        responder: Box::new(Talker { sentences: 12 }),
        voice: Box::new(Levels {
            turn: Arc::new(std::sync::atomic::AtomicU64::new(1)),
        }),
        output: Box::new(move |started| {
            Ok(
                Box::new(sotto::playback::Recorder::with_start(&out, 16_000, started))
                    as Box<dyn sotto::playback::Output>,
            )
        }),
    };
    let settings = Settings {
        barge_in: false,
        max_sentences: 100,
        ..Settings::default()
    };
    let mut records: Vec<TurnRecord> = Vec::new();
    let summary = agent::run(
        listen(&input),
        stages,
        settings,
        Arc::new(AtomicBool::new(false)),
        |r| records.push(r.clone()),
    )
    .unwrap();
    assert_eq!(
        records.len(),
        1,
        "only the question is a turn: {records:#?}"
    );
    assert_eq!(records[0].outcome, TurnOutcome::Answered);
    assert_eq!(
        summary.muted_speech, 1,
        "the words said over the reply are counted once"
    );
}

#[test]
fn shell_metacharacters_in_a_transcript_run_nothing_they_should_not() {
    let dir = tempfile::tempdir().unwrap();
    let args_log = dir.path().join("args.log");
    let program = recorder_program(dir.path(), &args_log);
    let pwned = dir.path().join("PWNED");
    let commands = sotto::commands::Commands::parse(
        &dir.path().join("commands.toml"),
        &format!(
            r#"
[[command]]
name = "note"
phrases = ["take a note {{text}}"]
run = ["{p}", "note", "{{text}}"]
slots.text = {{ kind = "text" }}

[[command]]
name = "lamp-on"
phrases = ["turn on the lamp"]
run = ["{p}", "lamp"]
"#,
            p = program.display()
        ),
    )
    .unwrap();
    let attack = format!("touch {}", pwned.display());
    let transcripts: Vec<&'static str> = vec![
        Box::leak(
            format!("Take a note $({attack}) and `{attack}`; {attack} && {attack}")
                .into_boxed_str(),
        ),
        Box::leak(format!("Turn on the lamp; {attack} | sh").into_boxed_str()),
    ];
    let u = dir.path().join("u.wav");
    espeak("Take a note of this.", &u);
    let input = dir.path().join("input.wav");
    concat(
        &[
            u.clone(),
            silence(dir.path(), "2"),
            u,
            silence(dir.path(), "2"),
        ],
        &input,
    );
    let actions = dir.path().join("actions.jsonl");
    let stages = Stages {
        transcriber: Box::new(Script(transcripts)),
        responder: Box::new(Talker { sentences: 1 }),
        voice: Box::new(Levels {
            turn: Arc::new(std::sync::atomic::AtomicU64::new(1)),
        }),
        output: {
            let p = dir.path().join("out.wav");
            Box::new(move |started| {
                Ok(
                    Box::new(sotto::playback::Recorder::with_start(&p, 16_000, started))
                        as Box<dyn sotto::playback::Output>,
                )
            })
        },
    };
    let settings = Settings {
        commands,
        action_log: Some(actions.clone()),
        ..Settings::default()
    };
    let summary = agent::run(
        listen(&input),
        stages,
        settings,
        Arc::new(AtomicBool::new(false)),
        |_| {},
    )
    .unwrap();
    assert!(!pwned.exists(), "a shell ran the transcript");
    let outcomes: Vec<_> = summary.turns.iter().map(|t| t.outcome).collect();
    // The note ran with the words as one plain argument; the lamp phrase buried in a shell
    // line is not a clear command, so it ran nothing.
    assert_eq!(
        outcomes,
        [TurnOutcome::Command, TurnOutcome::Answered],
        "{:#?}",
        summary.turns
    );
    let args = std::fs::read_to_string(&args_log).unwrap();
    let lines: Vec<&str> = args.lines().collect();
    assert_eq!(lines.len(), 2, "{args}");
    assert_eq!(lines[0], "note");
    assert!(
        !lines[1].contains(['$', '`', ';', '&', '|', '(', ')', '/']),
        "the slot value is plain words: {:?}",
        lines[1]
    );
    let log = turns(&actions);
    let stages: Vec<&str> = log.iter().map(|l| l["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["requested", "started", "finished"], "{log:?}");
    assert!(log.iter().all(|l| l["command"] == "note"));
}

#[test]
fn the_action_log_shows_the_whole_life_of_each_action_and_no_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran.log");
    let program = recorder_program(dir.path(), &ran);
    let commands = sotto::commands::Commands::parse(
        &dir.path().join("commands.toml"),
        &format!(
            r#"
[[command]]
name = "delete"
phrases = ["delete the old files"]
run = ["{}", "deleted"]
confirm = true
"#,
            program.display()
        ),
    )
    .unwrap();
    // Asked, refused; asked, confirmed. Real listener, matcher, coordinator, runner and log;
    // the transcripts are scripted (speech recognition is not what is tested here).
    let transcripts = vec![
        "Delete the old files.",
        "No, don't do it.",
        "Delete the old files.",
        "Yes.",
    ];
    let u = dir.path().join("u.wav");
    espeak("Delete the old files.", &u);
    let mut parts = Vec::new();
    for _ in 0..transcripts.len() {
        parts.push(u.clone());
        parts.push(silence(dir.path(), "5"));
    }
    let input = dir.path().join("input.wav");
    concat(&parts, &input);
    let actions = dir.path().join("actions.jsonl");
    let stages = Stages {
        transcriber: Box::new(Script(transcripts)),
        responder: Box::new(Talker { sentences: 1 }),
        voice: Box::new(Levels {
            turn: Arc::new(std::sync::atomic::AtomicU64::new(1)),
        }),
        output: {
            let p = dir.path().join("out.wav");
            Box::new(move |started| {
                Ok(
                    Box::new(sotto::playback::Recorder::with_start(&p, 16_000, started))
                        as Box<dyn sotto::playback::Output>,
                )
            })
        },
    };
    let settings = Settings {
        commands,
        action_log: Some(actions.clone()),
        ..Settings::default()
    };
    agent::run(
        listen(&input),
        stages,
        settings,
        Arc::new(AtomicBool::new(false)),
        |_| {},
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(&ran).unwrap_or_default(),
        "deleted\n",
        "ran once, after the yes"
    );
    let log = turns(&actions);
    let stages: Vec<&str> = log.iter().map(|l| l["stage"].as_str().unwrap()).collect();
    assert_eq!(
        stages,
        [
            "requested",
            "declined",
            "requested",
            "confirmed",
            "started",
            "finished"
        ],
        "{log:#?}"
    );
    assert_eq!(log[1]["transcript"], "No, don't do it.");
    assert_eq!(log[5]["result"]["status"], "ok");
}

// --- Speculative turn-taking, with the real models. --------------------------------------

/// The speculation counts the agent prints on stderr with `--metrics`.
fn speculation(out: &std::process::Output) -> serde_json::Value {
    let err = stderr(out);
    let line = err
        .lines()
        .find_map(|l| l.strip_prefix("speculation: "))
        .unwrap_or_else(|| panic!("no speculation counts on stderr:\n{err}"));
    serde_json::from_str(line).unwrap()
}

/// Seconds into `samples` of the first sound (|s| > 0.01), if any.
fn first_sound_s(samples: &[f32], rate: u32) -> Option<f64> {
    samples
        .iter()
        .position(|s| s.abs() > 0.01)
        .map(|i| i as f64 / rate as f64)
}

#[test]
fn a_pause_in_the_middle_of_a_sentence_is_one_turn_and_its_speculation_says_and_runs_nothing() {
    model(sotto::models::WHISPER_GGML);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("timer.log");
    let program = recorder_program(dir.path(), &log);
    let commands = dir.path().join("commands.toml");
    std::fs::write(
        &commands,
        format!(
            r#"
[[command]]
name = "timer"
phrases = ["set a timer for {{minutes}} minutes"]
slots.minutes = {{ kind = "number" }}
run = ["{}", "timer", "{{minutes}}"]
reply = "The timer is set."
"#,
            program.display()
        ),
    )
    .unwrap();
    let (a, b) = (dir.path().join("a.wav"), dir.path().join("b.wav"));
    voice("Set a timer for", &a);
    voice("ten minutes.", &b);
    let input = dir.path().join("input.wav");
    concat(
        &[
            silence(dir.path(), "1"),
            a,
            silence_ms(dir.path(), 400),
            b,
            silence(dir.path(), "4"),
        ],
        &input,
    );
    let (metrics, actions, out_wav) = (
        dir.path().join("metrics.jsonl"),
        dir.path().join("actions.jsonl"),
        dir.path().join("out.wav"),
    );
    let out = run(sotto()
        .args(["agent", "--input"])
        .arg(&input)
        .arg("--commands")
        .arg(&commands)
        .arg("--action-log")
        .arg(&actions)
        .arg("--metrics")
        .arg(&metrics)
        .arg("--output")
        .arg(&out_wav));
    assert!(out.status.success(), "{}", stderr(&out));
    let spec = speculation(&out);
    let t = turns(&metrics);
    assert_eq!(t.len(), 1, "one turn across the pause: {t:?}\n{spec}");
    let heard = words(t[0]["transcript"].as_str().unwrap());
    assert!(
        heard.ends_with(&["ten".into(), "minutes".into()]),
        "the turn holds the words after the pause: {heard:?}"
    );
    assert_eq!(t[0]["outcome"], "command", "{}", t[0]);
    // The pause in the middle was transcribed and then voided when speech went on.
    assert!(spec["pauses"].as_u64().unwrap() >= 1, "{spec}");
    assert!(spec["discarded"].as_u64().unwrap() >= 1, "{spec}");
    // Nothing was said before the whole sentence was heard, and the action ran once, with
    // the number from after the pause.
    let (samples, rate) = read_wav(&out_wav);
    let first = first_sound_s(&samples, rate).expect("the reply was spoken");
    let end = t[0]["end_of_speech_s"].as_f64().unwrap();
    assert!(
        first >= end,
        "audio at {first:.3} s, before the end of the sentence at {end:.3} s"
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "timer\n10\n");
    let stages: Vec<String> = turns(&actions)
        .iter()
        .map(|l| l["stage"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(stages, ["requested", "started", "finished"]);
}

/// Answers `text` (spoken by espeak-ng, which says it the same way every time — Piper's
/// renditions vary and sometimes pause mid-question — then silence) in a fresh agent with a
/// 3 s hangover, so a busy machine's slower transcription of the pause still decides before
/// the hangover does (a CI machine once took 1.3 s to transcribe the pause, which tied with a
/// 1.5 s hangover); its one turn.
fn answer_once(dir: &Path, name: &str, text: &str) -> (serde_json::Value, serde_json::Value) {
    let speech = dir.join(format!("{name}-speech.wav"));
    espeak(text, &speech);
    let input = dir.join(format!("{name}.wav"));
    concat(&[silence(dir, "1"), speech, silence(dir, "6")], &input);
    let metrics = dir.join(format!("{name}.jsonl"));
    let out = run(sotto()
        .args(["agent", "--turns", "1", "--hangover-ms", "3000", "--input"])
        .arg(&input)
        .arg("--metrics")
        .arg(&metrics)
        .arg("--output")
        .arg(dir.join(format!("{name}-reply.wav"))));
    assert!(out.status.success(), "{}", stderr(&out));
    let t = turns(&metrics);
    assert_eq!(t.len(), 1, "{t:?}");
    (t[0].clone(), speculation(&out))
}

#[test]
fn a_complete_request_is_answered_sooner_than_one_left_hanging() {
    model(sotto::models::WHISPER_GGML);
    let dir = tempfile::tempdir().unwrap();
    let (done, done_spec) = answer_once(dir.path(), "done", "What is the capital of France?");
    let (hanging, hanging_spec) = answer_once(
        dir.path(),
        "hanging",
        "Tell me a story about a dragon and a",
    );
    let first_audio = |t: &serde_json::Value| t["latency"]["first_audio_ms"].as_u64().unwrap();
    let turn_end = |t: &serde_json::Value| t["latency"]["vad_end_ms"].as_u64().unwrap();
    eprintln!(
        "from the last word: complete {} ms to the end of the turn, {} ms to first audio; \
         hanging {} ms, {} ms",
        turn_end(&done),
        first_audio(&done),
        turn_end(&hanging),
        first_audio(&hanging)
    );
    assert_eq!(done["ended_at_pause"], true, "{done}\n{done_spec}");
    assert_eq!(
        hanging["ended_at_pause"], false,
        "{hanging}\n{hanging_spec}"
    );
    assert_eq!(
        done_spec["confirmed"], 1,
        "the pause's transcript was the final one"
    );
    // The hanging request waited for the full hangover (3 s here) before its turn ended;
    // the complete one ended at its pause (200 ms, plus the time to transcribe it, which grows
    // when the machine is busy) and was answered sooner.
    assert!(turn_end(&hanging) >= 2950, "{hanging}");
    assert!(turn_end(&done) < turn_end(&hanging), "{done}\n{hanging}");
    assert!(
        first_audio(&done) < first_audio(&hanging),
        "{done}\n{hanging}"
    );
}

#[test]
fn a_command_recognised_at_its_pause_runs_once() {
    model(sotto::models::WHISPER_GGML);
    let dir = tempfile::tempdir().unwrap();
    let lamp = dir.path().join("lamp.log");
    let program = recorder_program(dir.path(), &lamp);
    let commands = dir.path().join("commands.toml");
    std::fs::write(
        &commands,
        format!(
            r#"
[[command]]
name = "lamp-on"
phrases = ["turn on the lamp"]
run = ["{}", "lamp", "on"]
reply = "The lamp is on."
"#,
            program.display()
        ),
    )
    .unwrap();
    let speech = dir.path().join("lamp.wav");
    voice("Turn on the lamp.", &speech);
    let input = dir.path().join("input.wav");
    concat(
        &[silence(dir.path(), "1"), speech, silence(dir.path(), "4")],
        &input,
    );
    let (metrics, actions) = (
        dir.path().join("metrics.jsonl"),
        dir.path().join("actions.jsonl"),
    );
    let out = run(sotto()
        .args(["agent", "--input"])
        .arg(&input)
        .arg("--commands")
        .arg(&commands)
        .arg("--action-log")
        .arg(&actions)
        .arg("--metrics")
        .arg(&metrics)
        .arg("--output")
        .arg(dir.path().join("out.wav")));
    assert!(out.status.success(), "{}", stderr(&out));
    let spec = speculation(&out);
    let t = turns(&metrics);
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[0]["outcome"], "command", "{}", t[0]);
    assert_eq!(t[0]["ended_at_pause"], true, "{}\n{spec}", t[0]);
    assert_eq!(
        spec["confirmed"], 1,
        "speculation and final pass agreed: {spec}"
    );
    let action_ms = t[0]["latency"]["action_ms"].as_u64().expect("action time");
    eprintln!("last word → action {action_ms} ms");
    assert_eq!(
        std::fs::read_to_string(&lamp).unwrap(),
        "lamp\non\n",
        "ran once"
    );
    let started = turns(&actions)
        .iter()
        .filter(|l| l["stage"] == "started")
        .count();
    assert_eq!(started, 1);
}
