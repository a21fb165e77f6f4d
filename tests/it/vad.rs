//! The voice detector over a long run: the same speech after a gap of digital silence is
//! heard the same way at minute 40 as at minute 0.

use sotto::vad::{Detector, DetectorKind, FRAME_SAMPLES, Segmenter, SegmenterConfig};

use crate::util::jfk_wav;

/// Forty minutes of jfk.wav, each copy followed by ~2 s of digital silence (the gaps of a
/// file, a muted microphone, the mic muted while sotto speaks). A replay of an hour like this
/// once showed WebRTC's decisions drifting (the speech it heard in the zeros growing from 21
/// to 48 frames per 5 minutes, clips split differently after 25 minutes); `dictate` merged
/// utterances across 2 s gaps after ~26 minutes. Every copy must now get the very same frame
/// decisions and the same utterances, none across a gap.
#[test]
fn the_detector_hears_the_same_speech_the_same_way_after_forty_minutes() {
    let jfk = sotto::audio::read_for_whisper(&jfk_wav()).unwrap().samples;
    // A cycle of whole frames, so every copy meets the detector in the same frame phase.
    let cycle_frames = (jfk.len() + 32_000).div_ceil(FRAME_SAMPLES);
    let mut cycle = jfk.clone();
    cycle.resize(cycle_frames * FRAME_SAMPLES, 0.0);
    let cycles = 40 * 60 * 16_000 / cycle.len();

    let mut detector = Detector::new(DetectorKind::Webrtc, 2);
    let mut segmenter = Segmenter::new(SegmenterConfig::default());
    let mut first: Option<(Vec<bool>, usize)> = None;
    let mut utterances_per_cycle = Vec::new();
    for c in 0..cycles {
        let mut decisions = Vec::with_capacity(cycle_frames);
        let mut utterances = 0;
        for (i, frame) in cycle.chunks(FRAME_SAMPLES).enumerate() {
            let speech = detector.is_speech(frame);
            decisions.push(speech);
            if let Some(u) = segmenter.push(frame, speech) {
                utterances += 1;
                let cycle_start = (c * cycle_frames) as f64 * 0.03;
                assert!(
                    u.start.as_secs_f64() >= cycle_start - 0.5,
                    "copy {c}, frame {i}: an utterance from {:?} reaches back into the \
                     previous copy (started {cycle_start:.2} s)",
                    u.start
                );
            }
        }
        utterances_per_cycle.push(utterances);
        match &first {
            None => first = Some((decisions, utterances)),
            Some((d0, _)) => {
                let differ = d0.iter().zip(&decisions).filter(|(a, b)| a != b).count();
                assert_eq!(
                    differ,
                    0,
                    "copy {c} (minute {:.1}): {differ} frame decisions differ from the first copy's",
                    (c * cycle.len()) as f64 / 16_000.0 / 60.0
                );
            }
        }
    }
    assert!(
        detector.resets() >= cycles as u64 - 1,
        "a fresh start in every gap"
    );
    let (_, u0) = first.unwrap();
    assert!(u0 >= 1, "jfk.wav is heard as speech");
    assert!(
        utterances_per_cycle.iter().all(|&u| u == u0),
        "utterances per copy: {utterances_per_cycle:?}"
    );
}
