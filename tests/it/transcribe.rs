//! `sotto transcribe` on real speech with the imported Whisper tiny.en.

use std::time::Duration;

use crate::util::*;

#[test]
fn jfk_is_transcribed_word_for_word() {
    model(sotto::models::WHISPER_GGML);
    let out = run(sotto().arg("transcribe").arg(jfk_wav()));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(words(&stdout(&out)), words(&jfk_txt()));
}

const SPOKEN: &str = "The weather today is sunny with a light breeze from the west. \
    Please remember to buy milk, bread and fresh apples on your way home. \
    The meeting has been moved to the large room on the second floor.";

#[test]
fn espeak_speech_at_every_common_rate_mono_and_stereo() {
    model(sotto::models::WHISPER_GGML);
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.wav");
    espeak(SPOKEN, &source);
    // (rate, channels, sox encoding args): 16-bit, 24-bit and 32-bit float are all covered.
    let mut cases = Vec::new();
    for rate in ["8000", "16000", "22050", "44100", "48000"] {
        for (channels, enc) in [("1", &["-b", "16"][..]), ("2", &["-b", "24"][..])] {
            cases.push((rate, channels, enc));
        }
    }
    cases.push(("48000", "2", &["-e", "floating-point", "-b", "32"][..]));
    cases.push(("16000", "1", &["-e", "signed-integer", "-b", "32"][..]));
    let mut files = Vec::new();
    for (i, (rate, channels, enc)) in cases.iter().enumerate() {
        let path = dir
            .path()
            .join(format!("case{i}_{rate}hz_{channels}ch.wav"));
        let mut args = vec!["-r", rate, "-c", channels];
        args.extend_from_slice(enc);
        sox(&source, &args, &path);
        files.push(path);
    }
    // One process for all files: the model loads once.
    let out = run(sotto()
        .args(["transcribe", "--format", "json", "--threads", "2"])
        .args(&files));
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), files.len());
    let mut failures = Vec::new();
    for (doc, file) in lines.iter().zip(&files) {
        let text = doc["text"].as_str().unwrap();
        let w = wer(SPOKEN, text);
        eprintln!("{}: WER {:.1}%: {text}", file.display(), w * 100.0);
        if w > 0.10 {
            failures.push(format!(
                "{}: WER {:.1}% > 10%: {text}",
                file.display(),
                w * 100.0
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Past 28 s a recording is cut at its pauses and each piece decoded in a context fitted to it
/// (stt.rs, `pause_chunks`): jfk.wav four times with half a second of silence between (45.5 s,
/// cut in the second gap) comes back word for word, every segment where its copy is.
#[test]
fn a_long_recording_cut_at_its_pauses_keeps_every_word_in_place() {
    model(sotto::models::WHISPER_GGML);
    require_tool("sox");
    let dir = tempfile::tempdir().unwrap();
    // jfk.wav is 16 kHz mono 16-bit: half a second of silence in the same format, joined.
    let gap = dir.path().join("gap.wav");
    let long = dir.path().join("jfk4.wav");
    let st = std::process::Command::new("sox")
        .args(["-n", "-r", "16000", "-c", "1", "-b", "16"])
        .arg(&gap)
        .args(["trim", "0", "0.5"])
        .status()
        .unwrap();
    assert!(st.success());
    let jfk = jfk_wav();
    let st = std::process::Command::new("sox")
        .args([&jfk, &gap, &jfk, &gap, &jfk, &gap, &jfk, &long])
        .status()
        .unwrap();
    assert!(st.success());
    for beam in ["1", "5"] {
        let out = run(sotto()
            .args(["transcribe", "--format", "json", "--beam-size", beam])
            .arg(&long));
        assert!(out.status.success(), "{}", stderr(&out));
        let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        let text = doc["text"].as_str().unwrap();
        let want = vec![jfk_txt(); 4].join(" ");
        assert!(wer(&want, text) <= 0.03, "beam {beam}: {text}");
        let (starts, ends): (Vec<f64>, Vec<f64>) = doc["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap()))
            .unzip();
        assert!(
            starts.windows(2).all(|w| w[0] <= w[1]),
            "beam {beam}: {starts:?}"
        );
        assert!(*ends.last().unwrap() <= 45.6, "beam {beam}: {ends:?}");
        // The cut falls in the second gap (22.5-23 s): the second piece's segments are placed
        // after it, not from zero, and run to the end of the recording.
        assert!(
            starts.iter().any(|s| (22.4..23.6).contains(s)),
            "beam {beam}: no segment starts at the cut: {starts:?}"
        );
        assert!(*ends.last().unwrap() >= 44.0, "beam {beam}: {ends:?}");
        // Subtitles stay subtitles: no piece comes back as one long line (a text prompt of
        // the words before each piece did that: 22.7 s).
        let longest = starts
            .iter()
            .zip(&ends)
            .map(|(s, e)| e - s)
            .fold(0.0, f64::max);
        assert!(
            longest <= 15.0,
            "beam {beam}: a {longest:.1} s segment: {starts:?}"
        );
    }
}

fn jfk_twice(dir: &std::path::Path) -> std::path::PathBuf {
    // 22 s of speech with a pause: several segments, to check timestamps are monotonic.
    let path = dir.join("jfk_twice.wav");
    require_tool("sox");
    let st = std::process::Command::new("sox")
        .arg(jfk_wav())
        .arg(jfk_wav())
        .arg(&path)
        .status()
        .unwrap();
    assert!(st.success());
    path
}

/// Parses `HH:MM:SS,mmm` or `HH:MM:SS.mmm`.
fn clock(s: &str) -> Duration {
    let s = s.replace(',', ".");
    let (hms, ms) = s.split_once('.').expect("milliseconds");
    let parts: Vec<u64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
    assert_eq!(parts.len(), 3, "{s}");
    Duration::from_millis(
        ((parts[0] * 60 + parts[1]) * 60 + parts[2]) * 1000 + ms.parse::<u64>().unwrap(),
    )
}

fn assert_monotonic(spans: &[(Duration, Duration)]) {
    assert!(spans.len() >= 2, "expected several segments, got {spans:?}");
    for w in spans.windows(2) {
        assert!(w[0].0 <= w[0].1, "{spans:?}");
        assert!(w[0].1 <= w[1].0, "segments overlap or go back: {spans:?}");
    }
    let last = spans.last().unwrap();
    assert!(last.0 <= last.1);
    assert!(last.1 <= Duration::from_secs(23), "{spans:?}");
}

#[test]
fn srt_vtt_and_json_parse_with_monotonic_timestamps() {
    model(sotto::models::WHISPER_GGML);
    let dir = tempfile::tempdir().unwrap();
    let input = jfk_twice(dir.path());
    let out = run(sotto()
        .args(["transcribe", "--format", "srt", "-o"])
        .arg(dir.path().join("out.srt"))
        .arg(&input));
    assert!(out.status.success(), "{}", stderr(&out));
    let srt = std::fs::read_to_string(dir.path().join("out.srt")).unwrap();
    let mut spans = Vec::new();
    for (i, block) in srt.trim().split("\n\n").enumerate() {
        let mut lines = block.lines();
        assert_eq!(lines.next().unwrap(), (i + 1).to_string(), "srt index");
        let (a, b) = lines
            .next()
            .unwrap()
            .split_once(" --> ")
            .expect("srt times");
        assert!(
            a.contains(',') && b.contains(','),
            "srt uses commas: {a} {b}"
        );
        spans.push((clock(a), clock(b)));
        assert!(!lines.next().unwrap_or("").is_empty(), "srt text");
    }
    assert_monotonic(&spans);

    let out = run(sotto().args(["transcribe", "--format", "vtt"]).arg(&input));
    assert!(out.status.success(), "{}", stderr(&out));
    let vtt = stdout(&out);
    let body = vtt.strip_prefix("WEBVTT\n\n").expect("WEBVTT header");
    let spans: Vec<_> = body
        .trim()
        .split("\n\n")
        .map(|block| {
            let (a, b) = block.lines().next().unwrap().split_once(" --> ").unwrap();
            (clock(a), clock(b))
        })
        .collect();
    assert_monotonic(&spans);

    let out = run(sotto().args(["transcribe", "--format", "json"]).arg(&input));
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let spans: Vec<_> = doc["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                Duration::from_secs_f64(s["start"].as_f64().unwrap()),
                Duration::from_secs_f64(s["end"].as_f64().unwrap()),
            )
        })
        .collect();
    assert_monotonic(&spans);
    assert!(
        wer(
            &format!("{} {}", jfk_txt(), jfk_txt()),
            doc["text"].as_str().unwrap()
        ) <= 0.1
    );
}

#[test]
fn stdin_is_read_with_a_dash() {
    model(sotto::models::WHISPER_GGML);
    let out = run(sotto()
        .args(["transcribe", "-"])
        .stdin(std::fs::File::open(jfk_wav()).unwrap()));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(words(&stdout(&out)), words(&jfk_txt()));
}

#[test]
fn an_existing_output_file_is_never_overwritten() {
    model(sotto::models::WHISPER_GGML);
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("notes.txt");
    std::fs::write(&out_path, "my own notes").unwrap();
    let out = run(sotto()
        .arg("transcribe")
        .arg(jfk_wav())
        .arg("-o")
        .arg(&out_path));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&out_path).unwrap(), "my own notes");
}

#[test]
fn inputs_with_the_same_name_each_keep_their_transcript() {
    model(sotto::models::WHISPER_GGML);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::fs::copy(jfk_wav(), a.join("talk.wav")).unwrap();
    espeak(
        "The meeting has been moved to the second floor.",
        &b.join("talk.wav"),
    );
    let out_dir = dir.path().join("out");
    let out = run(sotto()
        .arg("transcribe")
        .arg(a.join("talk.wav"))
        .arg(b.join("talk.wav"))
        .arg("-o")
        .arg(&out_dir));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("talk-2.txt"), "{}", stderr(&out));
    let first = std::fs::read_to_string(out_dir.join("talk.txt")).unwrap();
    let second = std::fs::read_to_string(out_dir.join("talk-2.txt")).unwrap();
    assert_eq!(words(&first), words(&jfk_txt()));
    assert!(second.contains("meeting"), "{second}");
}

#[test]
fn a_text_file_given_as_audio_is_refused_by_name() {
    model(sotto::models::WHISPER_GGML);
    let dir = tempfile::tempdir().unwrap();
    let txt = dir.path().join("shopping-list.wav");
    std::fs::write(&txt, "eggs\nflour\n").unwrap();
    let out = run(sotto().arg("transcribe").arg(&txt));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("shopping-list.wav") && err.contains("not a WAV file"),
        "{err}"
    );
}

#[test]
fn an_empty_wav_and_an_empty_file_are_refused_by_name() {
    model(sotto::models::WHISPER_GGML);
    let dir = tempfile::tempdir().unwrap();
    let empty_wav = dir.path().join("silence.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    hound::WavWriter::create(&empty_wav, spec)
        .unwrap()
        .finalize()
        .unwrap();
    let out = run(sotto().arg("transcribe").arg(&empty_wav));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("silence.wav") && err.contains("no audio"),
        "{err}"
    );

    let zero = dir.path().join("zero.wav");
    std::fs::write(&zero, b"").unwrap();
    let out = run(sotto().arg("transcribe").arg(&zero));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("zero.wav") && err.contains("empty"), "{err}");
}

#[test]
fn a_truncated_model_is_refused_with_a_clear_error() {
    let src = model(sotto::models::WHISPER_GGML);
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("ggml-cut.bin");
    let bytes = std::fs::read(&src).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = run(sotto()
        .arg("transcribe")
        .arg("--model")
        .arg(&cut)
        .arg(jfk_wav()));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("ggml-cut.bin") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn a_model_that_does_not_match_its_pin_is_refused() {
    let src = model(sotto::models::WHISPER_GGML);
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join(sotto::models::WHISPER_GGML);
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    let mut bytes = std::fs::read(&src).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&dst, &bytes).unwrap();
    let out = run(sotto()
        .arg("--models-dir")
        .arg(dir.path())
        .arg("transcribe")
        .arg(jfk_wav()));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("ggml-tiny.en.bin") && err.contains("does not match its pin"),
        "{err}"
    );

    // A missing model says what to run.
    std::fs::remove_file(&dst).unwrap();
    let out = run(sotto()
        .arg("--models-dir")
        .arg(dir.path())
        .arg("transcribe")
        .arg(jfk_wav()));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("sotto models import"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn nan_samples_are_a_clear_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nan.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    for i in 0..32_000 {
        w.write_sample(if i == 24_000 { f32::NAN } else { 0.1 })
            .unwrap();
    }
    w.finalize().unwrap();
    for args in [vec!["transcribe"], vec!["dictate", "--fast", "--input"]] {
        let out = run(sotto().args(&args).arg(&path));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("nan.wav") && err.contains("1.50 s") && err.contains("NaN"),
            "{err}"
        );
    }
}

#[test]
fn a_language_the_model_cannot_take_is_refused_by_name_and_auto_works() {
    model(sotto::models::WHISPER_GGML);
    let out = run(sotto()
        .args(["--language", "fr", "transcribe"])
        .arg(jfk_wav()));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is an English-only Whisper model: --language fr"),
        "{}",
        stderr(&out)
    );
    let out = run(sotto()
        .args(["--language", "klingon", "transcribe"])
        .arg(jfk_wav()));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a language Whisper knows"),
        "{}",
        stderr(&out)
    );
    let out = run(sotto()
        .args(["--language", "auto", "transcribe", "--beam-size", "1"])
        .arg(jfk_wav()));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(words(&stdout(&out)), words(&jfk_txt()));
}

/// The pieces of a long recording are decoded side by side (two workers, one thread each):
/// exactly what one thread gives decoding them in turn, in the same order and at the same
/// times. In-process, with the thread count fixed (`transcribe_on`): the CLI picks fewer
/// threads while other programs run, so it could not be relied on to take this path.
#[test]
fn pieces_decoded_side_by_side_give_what_one_thread_gives_in_turn() {
    let model = model(sotto::models::WHISPER_GGML);
    let cache = tempfile::tempdir().unwrap();
    // SAFETY: nextest runs each test in a process of its own; nothing else reads the
    // environment here.
    unsafe { std::env::set_var("SOTTO_CACHE_DIR", cache.path()) };
    let policy = sotto::audit::Policy {
        minimum: sotto::audit::verdict::Osaid::OpenWeight,
        ..Default::default()
    };
    let mut ctx = sotto::audit::AuditContext::new(&models_dir());
    let pass = sotto::audit::gate(&mut ctx, &policy, &["whisper-tiny.en"])
        .unwrap()
        .expect("whisper-tiny.en is open-weight");
    let mut stt = sotto::stt::Stt::load(&pass, &model).unwrap();
    let jfk = sotto::audio::read_for_whisper(&jfk_wav()).unwrap().samples;
    let gap = vec![0.0f32; 8_000];
    let long = [&jfk[..], &gap, &jfk, &gap, &jfk, &gap, &jfk].concat();
    let want = vec![jfk_txt(); 4].join(" ");
    for beam_size in [1, 5] {
        let opts = sotto::stt::SttOptions {
            beam_size,
            ..Default::default()
        };
        let key = |segments: &[sotto::stt::Segment]| -> Vec<(Duration, Duration, String)> {
            segments
                .iter()
                .map(|s| (s.start, s.end, s.text.clone()))
                .collect()
        };
        let in_turn = stt.transcribe_on(&long, &opts, 1, 1, None).unwrap();
        let side_by_side = stt.transcribe_on(&long, &opts, 2, 2, None).unwrap();
        assert_eq!(key(&in_turn), key(&side_by_side), "beam {beam_size}");
        let text = sotto::transcript::plain_text(&side_by_side);
        assert!(wer(&want, &text) <= 0.03, "beam {beam_size}: {text}");
        assert!(side_by_side.last().unwrap().start > Duration::from_secs(30));
    }
}
