//! Audio files in and out, and sample-rate conversion.
//!
//! Decoding (hound): WAV at any rate from 4 to 192 kHz, any channel count, 8/16/24/32-bit
//! integer or 32-bit float, from a file or stdin, downmixed to mono f32 in [-1, 1].
//! Resampling: rubato's FFT resampler over a whole clip, with its delay trimmed.
//!
//! "Sample" here is one value of one channel; a "frame" is one sample per channel.

use std::io::Read;
use std::path::{Path, PathBuf};

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

/// Whisper's input rate.
pub const WHISPER_SAMPLE_RATE_HZ: u32 = 16_000;
const MIN_RATE_HZ: u32 = 4_000;
const MAX_RATE_HZ: u32 = 192_000;
/// Frames per resampler chunk: small enough for low latency in the live path.
const RESAMPLER_CHUNK_FRAMES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the file is empty (0 bytes), not a WAV recording")]
    EmptyFile { path: PathBuf },
    #[error("{path}: not a WAV file ({reason}); sotto reads RIFF/WAVE PCM or float audio")]
    NotWav { path: PathBuf, reason: String },
    #[error("{path}: the WAV file holds no audio (0 samples)")]
    NoSamples { path: PathBuf },
    #[error("{path}: unsupported WAV format: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    #[error("{path}: the WAV data is cut short or damaged")]
    Damaged {
        path: PathBuf,
        #[source]
        source: hound::Error,
    },
    #[error(
        "{path}: sample {index} (at {at_s:.2} s) is {value}: the float audio is corrupt (NaN or \
         infinite samples would stall speech recognition)"
    )]
    NonFinite {
        path: PathBuf,
        index: usize,
        at_s: f64,
        value: f32,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: hound::Error,
    },
    #[error("resampling {from_hz} Hz to {to_hz} Hz failed")]
    Resample {
        from_hz: u32,
        to_hz: u32,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Mono audio at a known rate.
#[derive(Clone, Debug)]
pub struct Clip {
    pub sample_rate_hz: u32,
    pub samples: Vec<f32>,
    /// Channels in the source before downmixing.
    pub source_channels: u16,
}

impl Clip {
    pub fn duration_s(&self) -> f64 {
        self.samples.len() as f64 / self.sample_rate_hz as f64
    }
}

/// Reads a WAV file, or stdin when `path` is `-`, into mono f32.
pub fn read_wav(path: &Path) -> Result<Clip, AudioError> {
    let io = |source| AudioError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).map_err(io)?;
        buf
    } else {
        std::fs::read(path).map_err(io)?
    };
    decode_wav(path, &bytes)
}

/// Decodes WAV bytes; `path` only names the source in errors.
pub fn decode_wav(path: &Path, bytes: &[u8]) -> Result<Clip, AudioError> {
    let path = path.to_path_buf();
    if bytes.is_empty() {
        return Err(AudioError::EmptyFile { path });
    }
    let reader = hound::WavReader::new(bytes).map_err(|e| header_error(&path, e))?;
    let spec = reader.spec();
    check_spec(&path, spec)?;
    let mut interleaved = read_samples(reader, &path)?;
    let channels = spec.channels as usize;
    if let Some(index) = interleaved.iter().position(|x| !x.is_finite()) {
        return Err(AudioError::NonFinite {
            at_s: (index / channels) as f64 / spec.sample_rate as f64,
            value: interleaved[index],
            index,
            path,
        });
    }
    // Float audio may exceed full scale; beyond ±1 it is clipped (and counted in the log).
    let mut clipped = 0usize;
    for x in interleaved.iter_mut().filter(|x| x.abs() > 1.0) {
        *x = x.clamp(-1.0, 1.0);
        clipped += 1;
    }
    if clipped > 0 {
        tracing::warn!(
            file = %path.display(),
            clipped,
            "samples beyond full scale were clipped"
        );
    }
    if interleaved.len() < channels {
        return Err(AudioError::NoSamples { path });
    }
    let samples = downmix(&interleaved, channels);
    Ok(Clip {
        sample_rate_hz: spec.sample_rate,
        samples,
        source_channels: spec.channels,
    })
}

/// What a WAV header that hound cannot read means, for the user.
fn header_error(path: &Path, e: hound::Error) -> AudioError {
    let path = path.to_path_buf();
    match e {
        hound::Error::FormatError(reason) => AudioError::NotWav {
            path,
            reason: reason.to_string(),
        },
        hound::Error::Unsupported => AudioError::Unsupported {
            path,
            reason: "a WAV encoding other than PCM integer or IEEE float".into(),
        },
        hound::Error::IoError(e) => AudioError::NotWav {
            path,
            reason: format!("header cut short: {e}"),
        },
        other => AudioError::NotWav {
            path,
            reason: other.to_string(),
        },
    }
}

/// The rates, channel counts and sample formats sotto reads.
fn check_spec(path: &Path, spec: hound::WavSpec) -> Result<(), AudioError> {
    let unsupported = |reason: String| AudioError::Unsupported {
        path: path.to_path_buf(),
        reason,
    };
    if !(MIN_RATE_HZ..=MAX_RATE_HZ).contains(&spec.sample_rate) {
        return Err(unsupported(format!(
            "sample rate {} Hz (supported: {MIN_RATE_HZ}–{MAX_RATE_HZ} Hz)",
            spec.sample_rate
        )));
    }
    if spec.channels == 0 {
        return Err(unsupported("zero channels".into()));
    }
    match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) | (hound::SampleFormat::Int, 8..=32) => Ok(()),
        (format, bits) => Err(unsupported(format!("{bits}-bit {format:?} samples"))),
    }
}

/// A WAV file played as a live input (`dictate`/`agent --input`): checked whole when opened
/// (header, format, every sample readable and finite), then read block by block as it is
/// played, so an hour of audio costs what a second of it does in memory instead of the
/// 230 MB its samples take as floats.
#[derive(Clone, Debug)]
pub struct WavFile {
    pub path: PathBuf,
    pub sample_rate_hz: u32,
    pub channels: u16,
    /// Frames (one sample per channel) in the file.
    pub frames: u64,
}

impl WavFile {
    /// Opens and checks `path`, which must be a regular file (it is read twice: checked now,
    /// played later). Errors name the file and what is wrong, as [`read_wav`]'s do.
    pub fn open(path: &Path) -> Result<Self, AudioError> {
        let meta = std::fs::metadata(path).map_err(|source| AudioError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if !meta.is_file() {
            return Err(AudioError::Unsupported {
                path: path.to_path_buf(),
                reason: "not a regular file (a pipe or device cannot be played as an input; \
                         use `-` for stdin)"
                    .into(),
            });
        }
        if meta.len() == 0 {
            return Err(AudioError::EmptyFile {
                path: path.to_path_buf(),
            });
        }
        let reader = Self::reader(path)?;
        let spec = reader.spec();
        check_spec(path, spec)?;
        let mut wav = Self {
            path: path.to_path_buf(),
            sample_rate_hz: spec.sample_rate,
            channels: spec.channels,
            frames: 0,
        };
        // Read it all once, keeping nothing: a damaged or corrupt file is refused before any
        // model loads, as a file read whole is.
        let mut frames = 0u64;
        let mut clipped = 0usize;
        wav.stream_checked(4096, &mut clipped, |block| {
            frames += block.len() as u64;
            true
        })?;
        if clipped > 0 {
            tracing::warn!(file = %path.display(), clipped, "samples beyond full scale will be clipped");
        }
        if frames == 0 {
            return Err(AudioError::NoSamples {
                path: path.to_path_buf(),
            });
        }
        wav.frames = frames;
        Ok(wav)
    }

    pub fn duration_s(&self) -> f64 {
        self.frames as f64 / self.sample_rate_hz as f64
    }

    fn reader(
        path: &Path,
    ) -> Result<hound::WavReader<std::io::BufReader<std::fs::File>>, AudioError> {
        let file = std::fs::File::open(path).map_err(|source| AudioError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        hound::WavReader::new(std::io::BufReader::new(file)).map_err(|e| header_error(path, e))
    }

    /// Calls `f` with consecutive blocks of up to `frames_per_block` mono samples (in
    /// [-1, 1]) until the file ends or `f` returns false.
    pub fn stream(
        &self,
        frames_per_block: usize,
        f: impl FnMut(&[f32]) -> bool,
    ) -> Result<(), AudioError> {
        self.stream_checked(frames_per_block, &mut 0, f)
    }

    fn stream_checked(
        &self,
        frames_per_block: usize,
        clipped: &mut usize,
        mut f: impl FnMut(&[f32]) -> bool,
    ) -> Result<(), AudioError> {
        let mut reader = Self::reader(&self.path)?;
        let spec = reader.spec();
        let channels = spec.channels as usize;
        let damaged = |source: hound::Error| AudioError::Damaged {
            path: self.path.clone(),
            source,
        };
        let int_scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(8, 32) - 1)) as f32;
        let float = spec.sample_format == hound::SampleFormat::Float;
        let mut interleaved = Vec::with_capacity(frames_per_block.max(1) * channels);
        let mut index = 0usize;
        let mut samples: Box<dyn Iterator<Item = Result<f32, hound::Error>>> = if float {
            Box::new(reader.samples::<f32>())
        } else {
            Box::new(
                reader
                    .samples::<i32>()
                    .map(move |r| r.map(|v| v as f32 * int_scale)),
            )
        };
        loop {
            interleaved.clear();
            while interleaved.len() < frames_per_block.max(1) * channels {
                let Some(sample) = samples.next() else { break };
                let mut x = sample.map_err(damaged)?;
                if !x.is_finite() {
                    return Err(AudioError::NonFinite {
                        path: self.path.clone(),
                        index,
                        at_s: (index / channels) as f64 / spec.sample_rate as f64,
                        value: x,
                    });
                }
                if x.abs() > 1.0 {
                    x = x.clamp(-1.0, 1.0);
                    *clipped += 1;
                }
                interleaved.push(x);
                index += 1;
            }
            // A partial last frame (a file cut inside a frame) is dropped, as hound drops it.
            let whole = interleaved.len() / channels * channels;
            if whole == 0 {
                return Ok(());
            }
            let mono = downmix(&interleaved[..whole], channels);
            if !f(&mono) {
                return Ok(());
            }
        }
    }
}

fn read_samples(reader: hound::WavReader<&[u8]>, path: &Path) -> Result<Vec<f32>, AudioError> {
    let spec = reader.spec();
    let damaged = |source: hound::Error| AudioError::Damaged {
        path: path.to_path_buf(),
        source,
    };
    match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => reader
            .into_samples::<f32>()
            .collect::<Result<_, _>>()
            .map_err(damaged),
        (hound::SampleFormat::Int, bits @ 8..=32) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f32;
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()
                .map_err(damaged)
        }
        (format, bits) => Err(AudioError::Unsupported {
            path: path.to_path_buf(),
            reason: format!("{bits}-bit {format:?} samples"),
        }),
    }
}

/// Averages interleaved channels into one.
pub fn downmix(interleaved: &[f32], channels: usize) -> Vec<f32> {
    if channels == 1 {
        return interleaved.to_vec();
    }
    let gain = 1.0 / channels as f32;
    interleaved
        .chunks_exact(channels)
        .map(|frame| frame.iter().sum::<f32>() * gain)
        .collect()
}

/// Resamples a whole mono clip. Output length is `round(len * to / from)`, with the
/// resampler's delay trimmed so the output lines up with the input.
pub fn resample(samples: &[f32], from_hz: u32, to_hz: u32) -> Result<Vec<f32>, AudioError> {
    if from_hz == to_hz || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    let err = |source: Box<dyn std::error::Error + Send + Sync>| AudioError::Resample {
        from_hz,
        to_hz,
        source,
    };
    let mut rs = Fft::<f32>::new(
        from_hz as usize,
        to_hz as usize,
        RESAMPLER_CHUNK_FRAMES,
        1,
        FixedSync::Input,
    )
    .map_err(|e| err(e.into()))?;
    let input = InterleavedSlice::new(samples, 1, samples.len()).map_err(|e| err(e.into()))?;
    let needed = rs.process_all_needed_output_len(samples.len());
    let mut out = vec![0.0f32; needed];
    let mut output = InterleavedSlice::new_mut(&mut out, 1, needed).map_err(|e| err(e.into()))?;
    let (_, produced) = rs
        .process_all_into_buffer(&input, &mut output, samples.len(), None)
        .map_err(|e| err(e.into()))?;
    out.truncate(produced);
    Ok(out)
}

/// Reads any supported WAV and returns 16 kHz mono, ready for Whisper.
pub fn read_for_whisper(path: &Path) -> Result<Clip, AudioError> {
    let clip = read_wav(path)?;
    let samples = resample(&clip.samples, clip.sample_rate_hz, WHISPER_SAMPLE_RATE_HZ)?;
    Ok(Clip {
        sample_rate_hz: WHISPER_SAMPLE_RATE_HZ,
        samples,
        source_channels: clip.source_channels,
    })
}

/// A sample as 16-bit PCM (clipped to full scale).
pub fn to_i16(x: f32) -> i16 {
    (x.clamp(-1.0, 1.0) * i16::MAX as f32) as i16
}

/// The WAV format sotto writes: mono 16-bit PCM.
pub fn pcm16_mono(sample_rate_hz: u32) -> hound::WavSpec {
    hound::WavSpec {
        channels: 1,
        sample_rate: sample_rate_hz,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    }
}

/// A temporary file in the folder `path` is in (the current one for a bare file name), to be
/// persisted as `path` once it is whole: a crash never leaves a half-written file under the
/// real name. The error names the folder.
pub fn temp_file_beside(path: &Path) -> Result<tempfile::NamedTempFile, std::io::Error> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    tempfile::NamedTempFile::new_in(dir).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot create a file in {}: {e}", dir.display()),
        )
    })
}

/// Writes mono f32 audio as a 16-bit PCM WAV file.
pub fn write_wav(path: &Path, samples: &[f32], sample_rate_hz: u32) -> Result<(), AudioError> {
    let spec = pcm16_mono(sample_rate_hz);
    let werr = |source| AudioError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut w = hound::WavWriter::create(path, spec).map_err(werr)?;
    for &s in samples {
        w.write_sample(to_i16(s)).map_err(werr)?;
    }
    w.finalize().map_err(werr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, secs: f32, hz: f32) -> Vec<f32> {
        let n = (rate as f32 * secs) as usize;
        (0..n)
            .map(|i| (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin() * 0.5)
            .collect()
    }

    #[test]
    fn resampled_length_follows_the_rate_ratio() {
        for (from, to) in [
            (8_000, 16_000),
            (22_050, 16_000),
            (44_100, 16_000),
            (48_000, 16_000),
        ] {
            let x = sine(from, 1.3, 440.0);
            let y = resample(&x, from, to).unwrap();
            let expected = (x.len() as f64 * to as f64 / from as f64).round() as i64;
            assert!(
                (y.len() as i64 - expected).abs() <= 1,
                "{from}->{to}: {} vs {expected}",
                y.len()
            );
        }
    }

    #[test]
    fn resampling_keeps_a_tone_aligned_and_level() {
        let x = sine(48_000, 1.0, 440.0);
        let y = resample(&x, 48_000, 16_000).unwrap();
        let reference = sine(16_000, 1.0, 440.0);
        // Skip the edges; in the middle the tone must match in phase and amplitude.
        let err: f32 = y[2000..14000]
            .iter()
            .zip(&reference[2000..14000])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 0.02, "max error {err}");
    }

    #[test]
    fn downmix_averages_channels() {
        assert_eq!(downmix(&[1.0, 0.0, 0.5, 0.5], 2), vec![0.5, 0.5]);
    }

    #[test]
    fn text_is_not_wav() {
        let e = decode_wav(Path::new("notes.txt"), b"hello, this is text\n").unwrap_err();
        assert!(matches!(e, AudioError::NotWav { .. }), "{e}");
        assert!(e.to_string().contains("notes.txt"));
    }

    #[test]
    fn empty_file_is_named() {
        let e = decode_wav(Path::new("x.wav"), b"").unwrap_err();
        assert!(matches!(e, AudioError::EmptyFile { .. }));
    }
}

#[cfg(test)]
mod non_finite_tests {
    use super::*;

    fn float_wav(samples: &[f32]) -> Vec<u8> {
        let mut buf = std::io::Cursor::new(Vec::new());
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16_000,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let mut w = hound::WavWriter::new(&mut buf, spec).unwrap();
        for s in samples {
            w.write_sample(*s).unwrap();
        }
        w.finalize().unwrap();
        buf.into_inner()
    }

    #[test]
    fn nan_and_infinite_samples_are_an_error_naming_the_file_and_time() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut samples = vec![0.1f32; 32_000];
            samples[24_000] = bad;
            let e = decode_wav(Path::new("x.wav"), &float_wav(&samples)).unwrap_err();
            let text = e.to_string();
            assert!(text.contains("x.wav") && text.contains("1.50 s"), "{text}");
        }
    }

    #[test]
    fn samples_beyond_full_scale_are_clipped() {
        let clip = decode_wav(Path::new("x.wav"), &float_wav(&[0.5, 1e30, -7.0, -0.25])).unwrap();
        assert_eq!(clip.samples, vec![0.5, 1.0, -1.0, -0.25]);
    }
}

#[cfg(test)]
mod wav_file_tests {
    use super::*;

    fn write(path: &Path, spec: hound::WavSpec, samples: &[f32]) {
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for &s in samples {
            match (spec.sample_format, spec.bits_per_sample) {
                (hound::SampleFormat::Float, _) => w.write_sample(s).unwrap(),
                (_, bits) => w
                    .write_sample((s * ((1i64 << (bits - 1)) - 1) as f32) as i32)
                    .unwrap(),
            }
        }
        w.finalize().unwrap();
    }

    fn streamed(wav: &WavFile, block: usize) -> Vec<f32> {
        let mut out = Vec::new();
        wav.stream(block, |b| {
            out.extend_from_slice(b);
            true
        })
        .unwrap();
        out
    }

    #[test]
    fn a_file_streams_the_samples_it_decodes_to_whole() {
        let dir = tempfile::tempdir().unwrap();
        let interleaved: Vec<f32> = (0..9001).map(|i| ((i as f32) * 0.01).sin() * 0.8).collect();
        for (name, channels, format, bits) in [
            ("s16-stereo.wav", 2, hound::SampleFormat::Int, 16),
            ("s24-mono.wav", 1, hound::SampleFormat::Int, 24),
            ("f32-3ch.wav", 3, hound::SampleFormat::Float, 32),
            ("u8-mono.wav", 1, hound::SampleFormat::Int, 8),
        ] {
            let path = dir.path().join(name);
            let spec = hound::WavSpec {
                channels,
                sample_rate: 22_050,
                bits_per_sample: bits,
                sample_format: format,
            };
            let n = interleaved.len() / channels as usize * channels as usize;
            write(&path, spec, &interleaved[..n]);
            let whole = read_wav(&path).unwrap();
            let wav = WavFile::open(&path).unwrap();
            assert_eq!(wav.frames as usize, whole.samples.len(), "{name}");
            assert_eq!(wav.sample_rate_hz, 22_050);
            for block in [1, 220, 4096] {
                assert_eq!(
                    streamed(&wav, block),
                    whole.samples,
                    "{name}, blocks of {block}"
                );
            }
        }
    }

    #[test]
    fn a_bad_file_is_refused_when_opened_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16_000,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let nan = dir.path().join("nan.wav");
        let mut samples = vec![0.1f32; 16_000];
        samples[12_345] = f32::NAN;
        write(&nan, spec, &samples);
        let e = WavFile::open(&nan).unwrap_err().to_string();
        assert!(e.contains("nan.wav") && e.contains("sample 12345"), "{e}");

        let cut = dir.path().join("cut.wav");
        write(&cut, spec, &[0.1f32; 16_000]);
        let bytes = std::fs::read(&cut).unwrap();
        std::fs::write(&cut, &bytes[..bytes.len() - 1001]).unwrap();
        let e = WavFile::open(&cut).unwrap_err();
        assert!(matches!(e, AudioError::Damaged { .. }), "{e}");

        let empty = dir.path().join("empty.wav");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(
            WavFile::open(&empty).unwrap_err(),
            AudioError::EmptyFile { .. }
        ));

        let e = WavFile::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let e = WavFile::open(&dir.path().join("missing.wav"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.wav"), "{e}");
    }
}
