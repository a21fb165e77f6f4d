//! The transcript history: every final dictation transcript, one JSON line each, in the data
//! directory (`~/.local/share/sotto/history.jsonl`, `~/Library/Application Support/sotto/…`,
//! or `$SOTTO_DATA_DIR/history.jsonl`). `sotto history` shows the last ones.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// UTC, RFC 3339.
    pub time: String,
    pub text: String,
}

pub fn default_path() -> PathBuf {
    crate::config::data_dir().join("history.jsonl")
}

/// Appends one entry in a single write (O_APPEND), so concurrent sessions never interleave
/// halves of lines; the file is private to the user (0600).
pub fn append(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    let entry = Entry {
        time: crate::audit::identity::now_rfc3339(),
        text: text.to_string(),
    };
    let mut line = serde_json::to_string(&entry).map_err(std::io::Error::other)?;
    line.push('\n');
    f.write_all(line.as_bytes())
}

/// The last `n` entries, oldest first. A line that does not parse is skipped (a crash
/// mid-write can only truncate the last line).
pub fn last(path: &Path, n: usize) -> std::io::Result<Vec<Entry>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut entries: Vec<Entry> = text
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str(l).ok())
        .take(n)
        .collect();
    entries.reverse();
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_append_and_the_last_ones_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h/history.jsonl");
        for t in ["one", "two", "three"] {
            append(&p, t).unwrap();
        }
        let got: Vec<String> = last(&p, 2).unwrap().into_iter().map(|e| e.text).collect();
        assert_eq!(got, ["two", "three"]);
        assert!(last(&p, 1).unwrap()[0].time.ends_with('Z'));
        assert!(last(&dir.path().join("none"), 5).unwrap().is_empty());
    }
}
