//! Licences: names to SPDX ids, texts to SPDX ids, openness per MOF content type, and the
//! field-of-use clauses that make a licence not open whatever it is called.
//!
//! - Free-text names ("Apache 2.0", "MIT license", " apache-2.0") normalise to SPDX ids through
//!   the `spdx` crate's identifier tables; "unlicensed", "Undisclosed", empty and anything
//!   unrecognised are never open.
//! - Texts are identified against the SPDX licence texts with the `spdx` crate's detection
//!   store (an inlined askalono with the SPDX list's texts).
//! - Which licences are open for which content type (code / data / document) comes from the
//!   Model Openness Tool's `mof-licenses.json`, plus any OSI-approved licence (OSAID asks for
//!   "OSI-approved terms"; a permissive code licence on weights or documents is open terms).
//! - Field-of-use clauses are found by their signatures in licence, use-policy and model-card
//!   texts (families listed in docs: Llama, Qwen, RAIL, Gemma, non-commercial, scale gates).

use std::sync::OnceLock;

use serde::Serialize;
use spdx::detection::{Store, TextData};

/// MOF content types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentType {
    Code,
    Data,
    Document,
}

/// A licence as written somewhere, after normalisation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "kebab-case")]
pub enum Licence {
    /// A recognised SPDX licence id.
    Spdx(String),
    /// Explicitly none: "unlicensed", a component shipped without a licence.
    Unlicensed,
    /// Not disclosed, or no licence given at all.
    Undisclosed,
    /// A name that is not an SPDX licence (e.g. "Llama 2 Community License", "gemma").
    Other(String),
}

impl Licence {
    /// Normalises a free-text licence name.
    pub fn from_name(raw: &str) -> Self {
        let name = raw.trim();
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            ""
            | "undisclosed"
            | "unknown"
            | "none"
            | "n/a"
            | "not disclosed"
            | "license not specified"
            | "pending evaluation" => {
                return Self::Undisclosed;
            }
            "unlicensed" | "unlicenced" | "no license" | "no licence" => return Self::Unlicensed,
            _ => {}
        }
        if let Some(id) = spdx::license_id(name) {
            return Self::Spdx(id.name.to_string());
        }
        // Case-insensitive id ("apache-2.0", "mit"); then SPDX's own table of imprecise names
        // ("Apache 2.0", "apache2"), accepted only when it covers the whole name, so
        // "Apache 2.0 with extra terms" stays unrecognised.
        let without_suffix = lower
            .trim_end_matches(" license")
            .trim_end_matches(" licence")
            .trim();
        for candidate in [lower.as_str(), without_suffix] {
            if let Some(id) = spdx::identifiers::LICENSES
                .iter()
                .find(|l| l.name.eq_ignore_ascii_case(candidate))
            {
                return Self::Spdx(id.name.to_string());
            }
            if let Some((id, len)) = spdx::imprecise_license_id(candidate)
                && len == candidate.len()
            {
                return Self::Spdx(id.name.to_string());
            }
        }
        Self::Other(name.to_string())
    }

    pub fn spdx_id(&self) -> Option<&str> {
        match self {
            Self::Spdx(id) => Some(id),
            _ => None,
        }
    }

    /// sotto's reading of "open terms" (OSAID): what the Model Openness Tool counts as open
    /// ([`mot_is_open`]), plus the open-data licences its lists leave out ([`OPEN_DATA`]).
    /// The content type does not decide openness: a code licence on weights is open terms
    /// (MOF warns about it; see [`type_appropriate`]).
    pub fn is_open_terms(&self) -> bool {
        self.spdx_id()
            .is_some_and(|id| mot_is_open(id) || OPEN_DATA.contains(&id))
    }

    /// Kept for the evidence checks: open terms, whatever the content type.
    pub fn is_open_for(&self, _ty: ContentType) -> bool {
        self.is_open_terms()
    }
}

/// Open-data and open-content licences (Open Definition conformant) that neither the Model
/// Openness Tool's `mof-licenses.json` nor the SPDX list's OSI/FSF flags mark as open. sotto
/// counts them as open terms for weights, data and documents; the MOF class, computed exactly
/// as the Tool computes it, does not, and a note says what they would change.
pub const OPEN_DATA: &[&str] = &[
    "ODC-By-1.0",
    "PDDL-1.0",
    "CDLA-Sharing-1.0",
    "CC-BY-1.0",
    "CC-BY-2.0",
    "CC-BY-2.5",
    "CC-BY-3.0",
    "CC-BY-SA-1.0",
    "CC-BY-SA-2.0",
    "CC-BY-SA-2.5",
    "OGL-UK-3.0",
    "DL-DE-BY-2.0",
    "etalab-2.0",
];

/// One entry of the Model Openness Tool's licence table.
struct MotEntry {
    id: String,
    types: Vec<ContentType>,
    osi: bool,
    fsf: bool,
}

fn mot_table() -> &'static [MotEntry] {
    static TABLE: OnceLock<Vec<MotEntry>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let json: serde_json::Value =
            serde_json::from_str(include_str!("../../assets/mof/mof-licenses.json"))
                .unwrap_or_default();
        let parse = |s: &str| match s {
            "code" => Some(ContentType::Code),
            "data" => Some(ContentType::Data),
            "document" => Some(ContentType::Document),
            _ => None,
        };
        json["licenses"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|l| {
                let types = match &l["ContentType"] {
                    serde_json::Value::String(s) => parse(s).into_iter().collect(),
                    serde_json::Value::Array(a) => a
                        .iter()
                        .filter_map(|v| v.as_str().and_then(parse))
                        .collect(),
                    _ => Vec::new(),
                };
                Some(MotEntry {
                    id: l["licenseId"].as_str()?.to_string(),
                    types,
                    osi: l["isOsiApproved"].as_bool().unwrap_or(false),
                    fsf: l["isFsfLibre"].as_bool().unwrap_or(false),
                })
            })
            .collect()
    })
}

/// Whether the Model Openness Tool counts licence id `id`, exactly as written, as open: on its
/// open-data or open-content list, OSI-approved or FSF-libre (its own table first, then the
/// SPDX licence list's flags, as its licence import does). "Apache 2.0" is not an id and is
/// not open to it.
pub fn mot_is_open(id: &str) -> bool {
    if let Some(e) = mot_table().iter().find(|e| e.id == id) {
        let open_data_or_content = e
            .types
            .iter()
            .any(|t| matches!(t, ContentType::Data | ContentType::Document));
        return e.osi || e.fsf || open_data_or_content;
    }
    spdx::license_id(id)
        .filter(|l| l.name == id)
        .is_some_and(|l| l.is_osi_approved() || l.is_fsf_free_libre())
}

/// Whether the Model Openness Tool lists `id` as a licence for content of type `ty` (a code
/// licence on a document is open but not type-appropriate: a warning, not a failure).
pub fn type_appropriate(id: &str, ty: ContentType) -> bool {
    mot_table()
        .iter()
        .any(|e| e.id == id && e.types.contains(&ty))
}

impl std::fmt::Display for Licence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Spdx(id) => write!(f, "{id}"),
            Self::Unlicensed => write!(f, "unlicensed"),
            Self::Undisclosed => write!(f, "undisclosed"),
            Self::Other(name) => write!(f, "{name:?} (not an SPDX licence)"),
        }
    }
}

/// The result of identifying a licence text.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct TextMatch {
    pub spdx_id: String,
    pub score: f32,
}

/// Score above which a text is taken to be that SPDX licence (askalono's own default is 0.9).
const MATCH_THRESHOLD: f32 = 0.9;

/// Identifies a licence text against the SPDX licence texts. None when nothing matches well.
/// The first call loads the SPDX store (~1 s); the audit caches results by file hash.
pub fn identify_text(text: &str) -> Option<TextMatch> {
    static STORE: OnceLock<Option<Store>> = OnceLock::new();
    let store = STORE.get_or_init(|| Store::load_inline().ok()).as_ref()?;
    let m = store.analyze(&TextData::new(text));
    (m.score >= MATCH_THRESHOLD).then(|| TextMatch {
        spdx_id: m.name.to_string(),
        score: m.score,
    })
}

/// A field-of-use clause found in a text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Restriction {
    /// The licence family or kind of clause.
    pub family: String,
    /// Why it is not open.
    pub why: String,
    /// The sentence it was found in, as written.
    pub quote: String,
}

/// Signatures of clauses that restrict the field of use. Matched case-insensitively on
/// whitespace-normalised text; each is specific enough not to fire on open licences (the
/// unit tests run them over MIT, Apache-2.0, CC-BY-4.0 and CC0 texts).
const SIGNATURES: &[(&str, &str, &str)] = &[
    (
        "scale gate",
        "monthly active users",
        "licence terms change above a user count",
    ),
    (
        "acceptable use policy",
        "acceptable use policy",
        "use is bound by a separate use policy",
    ),
    (
        "prohibited use policy",
        "prohibited use policy",
        "use is bound by a separate use policy",
    ),
    (
        "use restrictions",
        "you agree not to use the model",
        "RAIL-style use restrictions",
    ),
    (
        "use restrictions",
        "use restrictions",
        "RAIL-style use restrictions",
    ),
    (
        "use restrictions",
        "may not be used for",
        "use is restricted to some fields",
    ),
    (
        "remote restriction",
        "restrict (remotely or otherwise)",
        "the licensor may restrict use remotely",
    ),
    (
        "remote restriction",
        "restrict usage of",
        "the licensor may restrict use",
    ),
    (
        "non-commercial",
        "noncommercial",
        "commercial use is not allowed",
    ),
    (
        "non-commercial",
        "non-commercial",
        "commercial use is not allowed",
    ),
    (
        "research only",
        "research purposes only",
        "use is limited to research",
    ),
    (
        "research only",
        "for research use only",
        "use is limited to research",
    ),
    (
        "no-compete",
        "to improve any other large language model",
        "outputs may not be used to build other models",
    ),
    (
        "revenue gate",
        "annual revenue",
        "licence terms change above a revenue threshold",
    ),
];

/// Finds field-of-use clauses in a text (licence, use policy, model card).
pub fn restrictions(text: &str) -> Vec<Restriction> {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let lower = flat.to_lowercase();
    let mut found: Vec<Restriction> = Vec::new();
    for &(family, needle, why) in SIGNATURES {
        let Some(pos) = find_word(&lower, needle) else {
            continue;
        };
        if found.iter().any(|r| r.family == family) {
            continue;
        }
        found.push(Restriction {
            family: family.into(),
            why: why.into(),
            quote: sentence_around(&flat, pos, needle.len()),
        });
    }
    found
}

/// First occurrence of `needle` as whole words ("noncommercial" must not match GPL's
/// "noncommercially").
fn find_word(haystack: &str, needle: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = haystack[from..].find(needle).map(|i| i + from) {
        let before = haystack[..i].chars().next_back();
        let after = haystack[i + needle.len()..].chars().next();
        if !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric) {
            return Some(i);
        }
        from = i + needle.len();
    }
    None
}

/// The sentence of `text` containing byte range `pos..pos+len`, trimmed to ~240 chars.
fn sentence_around(text: &str, pos: usize, len: usize) -> String {
    let start = text[..pos]
        .rfind(['.', ';', '\n'])
        .map(|i| i + 1)
        .unwrap_or(0);
    let end = text[pos + len..]
        .find(['.', ';', '\n'])
        .map(|i| pos + len + i + 1)
        .unwrap_or(text.len());
    let mut s = text[start..end].trim().to_string();
    if s.chars().count() > 240 {
        s = s.chars().take(237).collect::<String>() + "...";
    }
    s
}

/// Plain text of an HTML document: scripts and styles dropped, tags removed, common entities
/// decoded, block elements turned into line breaks.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let lower = html.to_ascii_lowercase();
    let mut i = 0;
    while i < html.len() {
        if html[i..].starts_with('<') {
            for skip in ["script", "style"] {
                if lower[i + 1..].starts_with(skip) {
                    let close = format!("</{skip}");
                    i = lower[i..].find(&close).map(|j| i + j).unwrap_or(html.len());
                }
            }
            let end = html[i..].find('>').map(|j| i + j + 1).unwrap_or(html.len());
            let tag = &lower[i..end];
            if [
                "<p", "<br", "<li", "<h", "<div", "</p", "</li", "</h", "</div",
            ]
            .iter()
            .any(|t| tag.starts_with(t))
            {
                out.push('\n');
            } else {
                out.push(' ');
            }
            i = end;
        } else {
            let next = html[i..].find('<').map(|j| i + j).unwrap_or(html.len());
            out.push_str(&html[i..next]);
            i = next;
        }
    }
    out.replace("&nbsp;", " ")
        .replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&rsquo;", "'")
        .replace("&lsquo;", "'")
        .replace("&ldquo;", "\"")
        .replace("&rdquo;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_names_normalise_to_spdx() {
        for (raw, id) in [
            ("Apache 2.0", "Apache-2.0"),
            ("apache-2.0", "Apache-2.0"),
            (" Apache-2.0", "Apache-2.0"),
            ("MIT license", "MIT"),
            ("MIT License", "MIT"),
            ("mit", "MIT"),
            ("CC0-1.0", "CC0-1.0"),
            ("cc-by-4.0", "CC-BY-4.0"),
        ] {
            assert_eq!(Licence::from_name(raw), Licence::Spdx(id.into()), "{raw:?}");
        }
    }

    #[test]
    fn missing_and_unknown_licences_are_never_open() {
        for raw in [
            "unlicensed",
            "Undisclosed",
            "",
            "   ",
            "Llama 2 Community License",
            "gemma",
        ] {
            let l = Licence::from_name(raw);
            assert!(l.spdx_id().is_none(), "{raw:?} -> {l:?}");
            for ty in [ContentType::Code, ContentType::Data, ContentType::Document] {
                assert!(!l.is_open_for(ty), "{raw:?} open for {ty:?}");
            }
        }
        assert_eq!(Licence::from_name("Undisclosed"), Licence::Undisclosed);
        assert_eq!(Licence::from_name("unlicensed"), Licence::Unlicensed);
        assert_eq!(Licence::from_name(""), Licence::Undisclosed);
    }

    #[test]
    fn the_model_openness_tool_counts_its_lists_and_the_osi_and_fsf_flags_as_open() {
        // Its open-data and open-content lists (SPDX's isOsiApproved is false for these).
        for id in [
            "CC0-1.0",
            "CC-BY-4.0",
            "CC-BY-SA-3.0",
            "CDLA-Permissive-2.0",
            "PDDL-1.0",
        ] {
            assert!(mot_is_open(id), "{id}");
        }
        // OSI-approved or FSF-libre by the SPDX list, though not in its own table.
        for id in [
            "GPL-3.0-only",
            "BSD-3-Clause",
            "ODbL-1.0",
            "LGPL-2.1-or-later",
        ] {
            assert!(mot_is_open(id), "{id}");
        }
        // Not open to it: no flag, not listed, or not an exact id.
        for id in [
            "ODC-By-1.0",
            "CC-BY-NC-4.0",
            "OpenRAIL",
            "Apache 2.0",
            "apache-2.0",
            "MIT license",
            "llama2",
        ] {
            assert!(!mot_is_open(id), "{id}");
        }
    }

    #[test]
    fn content_types_are_the_tools_lists_and_a_wrong_one_is_still_open() {
        assert!(type_appropriate("MIT", ContentType::Code));
        assert!(type_appropriate("CC-BY-4.0", ContentType::Document));
        assert!(type_appropriate("CDLA-Permissive-2.0", ContentType::Data));
        assert!(type_appropriate("Apache-2.0", ContentType::Document));
        assert!(!type_appropriate("Apache-2.0", ContentType::Data));
        assert!(!type_appropriate("GPL-3.0-only", ContentType::Document));
        assert!(Licence::from_name("GPL-3.0-only").is_open_terms());
    }

    #[test]
    fn open_data_licences_are_open_terms_to_sotto() {
        for name in [
            "ODC-By-1.0",
            "ODbL-1.0",
            "CC-BY-4.0",
            "CC0-1.0",
            "MIT",
            "Apache 2.0",
        ] {
            assert!(Licence::from_name(name).is_open_terms(), "{name}");
        }
        for name in ["CC-BY-NC-4.0", "CC-BY-ND-4.0", "llama2", "OpenRAIL-M"] {
            assert!(!Licence::from_name(name).is_open_terms(), "{name}");
        }
    }

    #[test]
    fn licence_texts_are_identified() {
        let mit = spdx::license_id("MIT").unwrap().text();
        assert_eq!(identify_text(mit).unwrap().spdx_id, "MIT");
        let apache = spdx::license_id("Apache-2.0").unwrap().text();
        assert_eq!(identify_text(apache).unwrap().spdx_id, "Apache-2.0");
        assert!(identify_text("You may do whatever you like, said nobody.").is_none());
    }

    #[test]
    fn open_licence_texts_have_no_restrictions() {
        for id in [
            "MIT",
            "Apache-2.0",
            "CC-BY-4.0",
            "CC0-1.0",
            "BSD-3-Clause",
            "GPL-3.0-only",
        ] {
            let text = spdx::license_id(id).unwrap().text();
            assert_eq!(restrictions(text), vec![], "{id}");
        }
    }

    #[test]
    fn restrictive_clauses_are_found_and_quoted() {
        let llama = "2. Additional Commercial Terms. If, on the Llama 2 version release date, the \
            monthly active users of the products or services made available by or for Licensee \
            is greater than 700 million monthly active users in the preceding calendar month, you \
            must request a license from Meta.";
        let r = restrictions(llama);
        assert_eq!(r[0].family, "scale gate");
        assert!(r[0].quote.contains("700 million"), "{}", r[0].quote);
        let rail = "You agree not to use the Model or Derivatives of the Model: - In any way that \
            violates any applicable national law";
        assert_eq!(restrictions(rail)[0].family, "use restrictions");
        let nc = "Attribution-NonCommercial 4.0 International";
        assert_eq!(restrictions(nc)[0].family, "non-commercial");
    }

    #[test]
    fn html_is_flattened() {
        let t = html_to_text(
            "<html><style>p{}</style><p>Google reserves the right to restrict (remotely or otherwise) usage&nbsp;of</p></html>",
        );
        assert!(
            t.contains("restrict (remotely or otherwise) usage of"),
            "{t}"
        );
        assert!(!t.contains("p{}"));
    }
}
