//! Replacement rules, applied in order to each final transcript before it is printed, typed
//! or pasted: deterministic corrections of what Whisper keeps getting wrong.
//!
//! One rule per line, `FROM => TO`; blank lines and lines starting with `#` are skipped.
//!
//! ```text
//! # literal: case-insensitive, whole words
//! kuber netties => Kubernetes
//! win => Nguyen
//! # regex: /PATTERN/ (flags after the slash: i), $1… in TO
//! /\bv(\d+)\b/ => version $1
//! ```
//!
//! A rule that does not parse is an error naming the file and line, before anything loads.

use std::path::{Path, PathBuf};

use regex::Regex;

#[derive(Debug, thiserror::Error)]
pub enum ReplaceError {
    #[error("cannot read replacements {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} line {line}: {message}")]
    Rule {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

#[derive(Debug)]
pub struct Replacements {
    rules: Vec<(Regex, String)>,
}

/// The largest replacements file read.
const MAX_BYTES: u64 = 1 << 20;

impl Replacements {
    pub fn load(path: &Path) -> Result<Self, ReplaceError> {
        let bytes = crate::models::read_regular(path, MAX_BYTES, "a replacements file").map_err(
            |source| ReplaceError::Read {
                path: path.to_path_buf(),
                source,
            },
        )?;
        let text = String::from_utf8_lossy(&bytes);
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ReplaceError> {
        let mut rules = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let bad = |message: String| ReplaceError::Rule {
                path: path.to_path_buf(),
                line: i + 1,
                message,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((from, to)) = line.split_once("=>") else {
                return Err(bad(format!("{line:?} has no `=>` (write FROM => TO)")));
            };
            let (from, to) = (from.trim(), to.trim());
            let pattern = if let Some(body) = from.strip_prefix('/') {
                let Some(end) = body.rfind('/') else {
                    return Err(bad(format!(
                        "{from:?} starts a regex with / but does not close it"
                    )));
                };
                let (pat, flags) = (&body[..end], &body[end + 1..]);
                if let Some(f) = flags.chars().find(|c| *c != 'i') {
                    return Err(bad(format!("unknown regex flag {f:?} (only i)")));
                }
                if flags.contains('i') {
                    format!("(?i){pat}")
                } else {
                    pat.to_string()
                }
            } else {
                if from.is_empty() {
                    return Err(bad("nothing to replace before `=>`".into()));
                }
                // Whole words, any case; inner spaces match any run of spaces.
                let words: Vec<String> = from.split_whitespace().map(regex::escape).collect();
                let edge = |w: &str| w.starts_with(|c: char| c.is_alphanumeric());
                let start = if edge(from) { r"\b" } else { "" };
                let end = if from.ends_with(|c: char| c.is_alphanumeric()) {
                    r"\b"
                } else {
                    ""
                };
                format!(r"(?i){start}{}{end}", words.join(r"\s+"))
            };
            let re = regex::RegexBuilder::new(&pattern)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| bad(format!("bad pattern: {e}")))?;
            if re.is_match("") {
                return Err(bad(format!("{from:?} matches the empty string")));
            }
            // A literal's replacement is literal; a regex's may use $1.
            let to = if from.starts_with('/') {
                to.to_string()
            } else {
                to.replace('$', "$$")
            };
            rules.push((re, to));
        }
        Ok(Self { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn apply(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (re, to) in &self.rules {
            out = re.replace_all(&out, to.as_str()).into_owned();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Replacements {
        Replacements::parse(Path::new("r.txt"), text).unwrap()
    }

    #[test]
    fn literal_rules_match_whole_words_in_any_case_in_order() {
        let r =
            rules("# names\nkuber netties => Kubernetes\nwin => Nguyen\nNguyen => Dr. Nguyen\n");
        assert_eq!(
            r.apply("Kuber  Netties runs at win's place, not winter."),
            "Kubernetes runs at Dr. Nguyen's place, not winter."
        );
    }

    #[test]
    fn regex_rules_use_groups_and_flags() {
        let r = rules(
            r"/\bv(\d+)\b/ => version $1
/colou?r/i => colour
cost => $5",
        );
        assert_eq!(r.apply("v2 Color cost"), "version 2 colour $5");
    }

    #[test]
    fn a_bad_rule_names_its_line() {
        let e = Replacements::parse(Path::new("r.txt"), "a => b\n\nno arrow here\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "r.txt line 3: \"no arrow here\" has no `=>` (write FROM => TO)"
        );
        let e = Replacements::parse(Path::new("r.txt"), "/(unclosed/ => x").unwrap_err();
        assert!(
            e.to_string().starts_with("r.txt line 1: bad pattern"),
            "{e}"
        );
        let e = Replacements::parse(Path::new("r.txt"), "/x*/ => y").unwrap_err();
        assert!(e.to_string().contains("empty string"), "{e}");
    }
}
