//! Identity of model files (sha256 + format metadata) and analysis of evidence texts, with a
//! cache so a warm start costs a `stat` per file.
//!
//! The cache (`$SOTTO_CACHE_DIR/audit-cache.json`, default the platform cache dir) maps a file's
//! absolute path to its sha256 with the facts that vouch for it (size, mtime, ctime, inode
//! and device), and an evidence file's sha256 to its licence analysis. A cached hash is used
//! only while all of those facts are unchanged: a file edited in place and its mtime restored
//! still has a new ctime (no user can set it), and a file replaced by another has a new inode.
//! Whenever the cache is unsure the file is hashed again, so pins and exceptions are checked
//! against the bytes on disk. After an engine loads, [`reverify`] hashes its files once more in
//! the background.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use super::licence::{self, Restriction, TextMatch};
use super::manifest::EvidenceKind;
use crate::models::{ModelError, gguf, sha256_file, whisper_ggml};

/// A weight file: where, how big, its hash, and what its own header says.
/// The largest licence, terms or card file the audit reads.
pub const MAX_EVIDENCE_BYTES: u64 = 8 << 20;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileIdentity {
    pub path: String,
    /// Where the file is on disk (not serialised: reports show `path`).
    #[serde(skip)]
    pub abs_path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
    pub metadata: BTreeMap<String, String>,
}

/// What an evidence file says.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvidenceAnalysis {
    pub sha256: String,
    /// The SPDX licence the text matches, if it is one.
    pub text_match: Option<TextMatch>,
    /// A licence the text states by name ("License: MIT").
    pub stated_licence: Option<String>,
    pub restrictions: Vec<Restriction>,
}

impl EvidenceAnalysis {
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(m) = &self.text_match {
            parts.push(format!("text is {} (score {:.2})", m.spdx_id, m.score));
        }
        if let Some(s) = &self.stated_licence {
            parts.push(format!("states licence {s:?}"));
        }
        if !self.restrictions.is_empty() {
            let fams: Vec<&str> = self
                .restrictions
                .iter()
                .map(|r| r.family.as_str())
                .collect();
            parts.push(format!("restricts use: {}", fams.join(", ")));
        }
        if parts.is_empty() {
            "no licence identified".into()
        } else {
            parts.join("; ")
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Stamp {
    bytes: u64,
    mtime_ns: u128,
    ctime_ns: i128,
    inode: u64,
    device: u64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Self {
            bytes: meta.len(),
            mtime_ns,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
            inode: meta.ino(),
            device: meta.dev(),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct CachedFile {
    /// Older caches have no stamp; their entries are never trusted.
    #[serde(default)]
    stamp: Option<Stamp>,
    sha256: String,
    metadata: BTreeMap<String, String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheData {
    files: BTreeMap<String, CachedFile>,
    /// Evidence analyses by (sha256, kind).
    evidence: BTreeMap<String, EvidenceAnalysis>,
}

/// The hash and analysis cache.
#[derive(Debug)]
pub struct HashCache {
    path: Option<PathBuf>,
    data: CacheData,
    dirty: bool,
}

impl HashCache {
    /// The cache at `$SOTTO_CACHE_DIR/audit-cache.json`, else the platform cache directory.
    pub fn load_default() -> Self {
        let dir = std::env::var_os("SOTTO_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| dirs::cache_dir().map(|d| d.join("sotto")));
        Self::load(dir.map(|d| d.join("audit-cache.json")))
    }

    /// A cache file that cannot be read or parsed is ignored (and rewritten): it only ever
    /// saves work, never decides anything.
    pub fn load(path: Option<PathBuf>) -> Self {
        let data = path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        Self {
            path,
            data,
            dirty: false,
        }
    }

    /// A cache that lives only in memory.
    pub fn in_memory() -> Self {
        Self::load(None)
    }

    pub fn save(&mut self) {
        let (Some(path), true) = (&self.path, self.dirty) else {
            return;
        };
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = path.with_extension("json.partial");
        let ok = serde_json::to_vec(&self.data)
            .ok()
            .and_then(|b| std::fs::write(&tmp, b).ok())
            .and_then(|_| std::fs::rename(&tmp, path).ok());
        if ok.is_none() {
            tracing::warn!(stage = "audit", cache = %path.display(), "could not save the audit cache");
        }
        self.dirty = false;
    }

    /// Identity of a weight file; `display` is the path shown in reports.
    pub fn identify(&mut self, path: &Path, display: &str) -> Result<FileIdentity, ModelError> {
        let meta = std::fs::metadata(path).map_err(|e| ModelError::io(path, e))?;
        let stamp = Stamp::of(&meta);
        let key = std::fs::canonicalize(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .display()
            .to_string();
        if let Some(c) = self.data.files.get(&key)
            && c.stamp.as_ref() == Some(&stamp)
            && stamp.mtime_ns != 0
        {
            return Ok(FileIdentity {
                path: display.to_string(),
                abs_path: PathBuf::from(&key),
                bytes: stamp.bytes,
                sha256: c.sha256.clone(),
                metadata: c.metadata.clone(),
            });
        }
        let sha256 = sha256_file(path)?;
        let metadata = file_metadata(path);
        // The stamp from before hashing: if the file changed while it was read, the next
        // look sees a different stamp and hashes it again.
        self.data.files.insert(
            key.clone(),
            CachedFile {
                stamp: Some(stamp.clone()),
                sha256: sha256.clone(),
                metadata: metadata.clone(),
            },
        );
        self.dirty = true;
        Ok(FileIdentity {
            path: display.to_string(),
            abs_path: PathBuf::from(key),
            bytes: stamp.bytes,
            sha256,
            metadata,
        })
    }

    /// Licence analysis of a licence, terms or card text (at most [`MAX_EVIDENCE_BYTES`]),
    /// cached by its hash.
    pub fn analyse_evidence(
        &mut self,
        path: &Path,
        kind: EvidenceKind,
    ) -> Result<EvidenceAnalysis, ModelError> {
        let meta = std::fs::metadata(path).map_err(|e| ModelError::io(path, e))?;
        if !meta.is_file() {
            return Err(ModelError::Format {
                path: path.to_path_buf(),
                reason: "is not a file: a licence text or card is expected here".into(),
            });
        }
        if meta.len() > MAX_EVIDENCE_BYTES {
            return Err(ModelError::Format {
                path: path.to_path_buf(),
                reason: format!(
                    "{} bytes: a licence text or card is at most {} MiB",
                    meta.len(),
                    MAX_EVIDENCE_BYTES >> 20
                ),
            });
        }
        let sha256 = sha256_file(path)?;
        let key = format!("{sha256}:{kind:?}");
        if let Some(a) = self.data.evidence.get(&key) {
            return Ok(a.clone());
        }
        let raw = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
        let mut text = String::from_utf8_lossy(&raw).into_owned();
        let is_html = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm"));
        if is_html {
            text = licence::html_to_text(&text);
        }
        let text_match = match kind {
            EvidenceKind::Licence | EvidenceKind::Terms => licence::identify_text(&text),
            _ => None,
        };
        let a = EvidenceAnalysis {
            sha256,
            text_match,
            // Model cards state licences for several things (the dataset's, the voice's…);
            // only package metadata states one for the package as a whole.
            stated_licence: (kind == EvidenceKind::PackageMetadata)
                .then(|| stated_licence(&text))
                .flatten(),
            restrictions: licence::restrictions(&text),
        };
        self.data.evidence.insert(key, a.clone());
        self.dirty = true;
        Ok(a)
    }
}

/// "License: MIT", "License-Expression: MIT", "* License: CC0" lines, as package metadata and
/// model cards state them.
fn stated_licence(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let l = line.trim().trim_start_matches(['*', '-', ' ']);
        let (key, value) = l.split_once(':')?;
        let key = key.trim().to_ascii_lowercase();
        (key == "license" || key == "license-expression" || key == "licence")
            .then(|| value.trim().to_string())
            .filter(|v| !v.is_empty() && v.len() < 80)
    })
}

/// What a model file says about itself, by format.
pub fn file_metadata(path: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let name = path.to_string_lossy().to_ascii_lowercase();
    if name.ends_with(".gguf") {
        match gguf::Header::read(path) {
            Ok(h) => {
                for (k, v) in &h.metadata {
                    if k.starts_with("general.")
                        && let Some(s) = v.as_str()
                    {
                        out.insert(k.clone(), s.to_string());
                    }
                }
            }
            Err(e) => {
                out.insert("error".into(), e.to_string());
            }
        }
    } else if name.ends_with(".bin") {
        if let Ok(h) = whisper_ggml::Header::read(path) {
            let hp = h.hparams;
            out.insert("format".into(), "whisper.cpp ggml".into());
            out.insert(
                "hparams".into(),
                format!(
                    "n_vocab {} n_audio_state {} n_audio_layer {} n_text_layer {} n_mels {}",
                    hp.n_vocab, hp.n_audio_state, hp.n_audio_layer, hp.n_text_layer, hp.n_mels
                ),
            );
        }
    } else if name.ends_with(".onnx") {
        out.extend(onnx_metadata(path));
    } else if name.ends_with(".safetensors") {
        out.extend(safetensors_metadata(path));
    }
    out
}

/// Top-level fields of an ONNX ModelProto (protobuf): producer, version, doc string and
/// `metadata_props`. The graph (field 7) is skipped without being parsed.
pub fn onnx_metadata(path: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(bytes) = std::fs::read(path) else {
        return out;
    };
    let mut pb = Proto { b: &bytes, pos: 0 };
    while let Some((field, wire)) = pb.key() {
        match (field, wire) {
            (2, 2) => insert_str(&mut out, "producer_name", pb.bytes()),
            (3, 2) => insert_str(&mut out, "producer_version", pb.bytes()),
            (6, 2) => insert_str(&mut out, "doc_string", pb.bytes()),
            (14, 2) => {
                // StringStringEntryProto { key = 1; value = 2; }
                let Some(entry) = pb.bytes() else { break };
                let mut e = Proto { b: entry, pos: 0 };
                let (mut k, mut v) = (None, None);
                while let Some((f, w)) = e.key() {
                    match (f, w) {
                        (1, 2) => k = e.bytes(),
                        (2, 2) => v = e.bytes(),
                        _ if e.skip(w).is_none() => break,
                        _ => {}
                    }
                }
                if let (Some(k), Some(v)) = (k, v) {
                    out.insert(
                        format!("metadata.{}", String::from_utf8_lossy(k)),
                        String::from_utf8_lossy(v).chars().take(200).collect(),
                    );
                }
            }
            (_, w) => {
                if pb.skip(w).is_none() {
                    break;
                }
            }
        }
    }
    out
}

fn insert_str(out: &mut BTreeMap<String, String>, key: &str, v: Option<&[u8]>) {
    if let Some(v) = v.filter(|v| !v.is_empty()) {
        out.insert(
            key.into(),
            String::from_utf8_lossy(v).chars().take(200).collect(),
        );
    }
}

struct Proto<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Proto<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.pos)?;
            self.pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    fn key(&mut self) -> Option<(u64, u64)> {
        if self.pos >= self.b.len() {
            return None;
        }
        let k = self.varint()?;
        Some((k >> 3, k & 7))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len())?;
        let out = &self.b[self.pos..end];
        self.pos = end;
        Some(out)
    }
    fn skip(&mut self, wire: u64) -> Option<()> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => (self.pos + 8 <= self.b.len()).then(|| self.pos += 8),
            2 => self.bytes().map(|_| ()),
            5 => (self.pos + 4 <= self.b.len()).then(|| self.pos += 4),
            _ => None,
        }
    }
}

/// The `__metadata__` map of a safetensors header.
pub fn safetensors_metadata(path: &Path) -> BTreeMap<String, String> {
    use std::io::Read;
    let mut out = BTreeMap::new();
    let Ok(mut f) = std::fs::File::open(path) else {
        return out;
    };
    let mut len = [0u8; 8];
    if f.read_exact(&mut len).is_err() {
        return out;
    }
    let n = u64::from_le_bytes(len);
    if n > 16 << 20 {
        return out;
    }
    let mut header = vec![0u8; n as usize];
    if f.read_exact(&mut header).is_err() {
        return out;
    }
    if let Ok(serde_json::Value::Object(h)) = serde_json::from_slice(&header)
        && let Some(serde_json::Value::Object(meta)) = h.get("__metadata__")
    {
        for (k, v) in meta {
            out.insert(
                format!("metadata.{k}"),
                v.as_str().unwrap_or_default().to_string(),
            );
        }
    }
    out
}

/// Current UTC time as RFC 3339, without a date-time dependency.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stated_licences_are_read_from_metadata_lines() {
        assert_eq!(
            stated_licence("Name: x\nLicense: MIT\n").as_deref(),
            Some("MIT")
        );
        assert_eq!(stated_licence("* License: CC0\n").as_deref(), Some("CC0"));
        assert_eq!(stated_licence("no licence here"), None);
    }

    #[test]
    fn rfc3339_has_the_right_shape() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'));
    }

    #[test]
    fn malformed_protobuf_is_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        for (i, b) in [
            &b"\xff\xff\xff"[..],
            b"\x12\x7fabc",
            b"",
            b"\x72\x05\x0a\x09",
        ]
        .iter()
        .enumerate()
        {
            let p = dir.path().join(format!("{i}.onnx"));
            std::fs::write(&p, b).unwrap();
            let _ = onnx_metadata(&p);
        }
    }
}
