//! Transcript output formats: plain text, SubRip (srt), WebVTT and JSON.
//!
//! Pure functions from segments to text, so every format is unit-tested without a model.

use std::time::Duration;

use serde::Serialize;

use crate::stt::Segment;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Txt,
    Srt,
    Vtt,
    Json,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Txt => "txt",
            Format::Srt => "srt",
            Format::Vtt => "vtt",
            Format::Json => "json",
        }
    }
}

/// What the json format carries besides the segments.
#[derive(Debug, Serialize)]
pub struct Meta<'a> {
    pub file: &'a str,
    pub model: &'a str,
    pub duration_s: f64,
    pub threads: usize,
    /// The language decoded in (detected, when asked for "auto").
    pub language: &'a str,
    pub transcribe_ms: u64,
}

#[derive(Serialize)]
struct JsonSegment<'a> {
    start: f64,
    end: f64,
    text: &'a str,
}

pub fn render(format: Format, segments: &[Segment], meta: &Meta) -> String {
    match format {
        Format::Txt => txt(segments),
        Format::Srt => srt(segments),
        Format::Vtt => vtt(segments),
        Format::Json => json(segments, meta),
    }
}

/// The recognised words, one segment per line.
pub fn txt(segments: &[Segment]) -> String {
    segments.iter().map(|s| format!("{}\n", s.text)).collect()
}

/// Joins segment texts into one line.
pub fn plain_text(segments: &[Segment]) -> String {
    segments
        .iter()
        .map(|s| s.text.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

fn clock(t: Duration, decimal_sep: char) -> String {
    let ms = t.as_millis();
    format!(
        "{:02}:{:02}:{:02}{decimal_sep}{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

pub fn srt(segments: &[Segment]) -> String {
    let mut out = String::new();
    for (i, s) in segments.iter().enumerate() {
        out += &format!(
            "{}\n{} --> {}\n{}\n\n",
            i + 1,
            clock(s.start, ','),
            clock(s.end, ','),
            s.text
        );
    }
    out
}

pub fn vtt(segments: &[Segment]) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for s in segments {
        out += &format!(
            "{} --> {}\n{}\n\n",
            clock(s.start, '.'),
            clock(s.end, '.'),
            s.text
        );
    }
    out
}

pub fn json(segments: &[Segment], meta: &Meta) -> String {
    let segs: Vec<JsonSegment> = segments
        .iter()
        .map(|s| JsonSegment {
            start: s.start.as_secs_f64(),
            end: s.end.as_secs_f64(),
            text: &s.text,
        })
        .collect();
    let doc = serde_json::json!({
        "file": meta.file,
        "model": meta.model,
        "duration_s": meta.duration_s,
        "threads": meta.threads,
        "language": meta.language,
        "transcribe_ms": meta.transcribe_ms,
        "text": plain_text(segments),
        "segments": segs,
    });
    format!("{doc}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs() -> Vec<Segment> {
        vec![
            Segment {
                start: Duration::from_millis(0),
                end: Duration::from_millis(2_500),
                text: "Hello there.".into(),
                last_word_p: None,
            },
            Segment {
                start: Duration::from_millis(2_500),
                end: Duration::from_millis(3_723_042),
                text: "General Kenobi.".into(),
                last_word_p: None,
            },
        ]
    }

    #[test]
    fn srt_uses_commas_and_counts_from_one() {
        let s = srt(&segs());
        assert!(s.starts_with("1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n2\n"));
        assert!(s.contains("01:02:03,042"));
    }

    #[test]
    fn vtt_has_header_and_dots() {
        let v = vtt(&segs());
        assert!(v.starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:02.500\n"));
    }

    #[test]
    fn json_carries_segments_and_text() {
        let meta = Meta {
            file: "a.wav",
            model: "m",
            duration_s: 3.0,
            threads: 2,
            language: "en",
            transcribe_ms: 5,
        };
        let v: serde_json::Value = serde_json::from_str(&json(&segs(), &meta)).unwrap();
        assert_eq!(v["segments"][1]["start"], 2.5);
        assert_eq!(v["language"], "en");
        assert_eq!(v["text"], "Hello there. General Kenobi.");
    }
}
