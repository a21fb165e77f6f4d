//! Turns a stream of LLM text pieces into speakable chunks, as early as possible.
//!
//! Pure logic, no I/O, unit-tested. The first chunk goes out at the first clause boundary (a
//! comma, colon or sentence end after a few words) so speech starts before the reply is
//! finished; later chunks end at sentence ends, or at a clause boundary once they are long.
//! A period does not end a sentence after an abbreviation ("Dr.", "e.g."), inside a number
//! ("3.14", "1,000") or after a list number ("1."). Text without punctuation is cut at a word
//! boundary after [`MAX_WORDS`] words.

/// Words the first chunk needs before a comma may end it.
const FIRST_CLAUSE_MIN_WORDS: usize = 3;
/// Without a comma, the first chunk ends at a word boundary after this many words (not on a
/// word that leaves it hanging): the voice can start on the first few words while the model
/// writes the rest.
const FIRST_CHUNK_WORDS: std::ops::RangeInclusive<usize> = 4..=6;

/// Words that leave a phrase hanging ("…of", "…the"): a chunk does not end on one, and a
/// transcript that ends on one is not a finished turn.
pub const DANGLING: &[&str] = &[
    "and", "or", "but", "so", "because", "the", "a", "an", "to", "of", "for", "with", "in", "on",
    "at", "from", "by", "my", "your", "his", "her", "their", "our", "its", "is", "are", "was",
    "were", "um", "uh", "er", "erm", "then", "if", "that", "which", "who", "like", "than", "plus",
    "minus", "times", "about", "as", "not", "no", "very",
];
/// Words after which a later chunk may end at a comma.
const LONG_CHUNK_WORDS: usize = 18;
/// Hard cut for text with no punctuation at all.
pub const MAX_WORDS: usize = 30;

const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "no", "inc",
    "ltd", "co", "approx", "fig", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept",
    "oct", "nov", "dec", "mt", "u.s", "a.m", "p.m",
];

/// A chunk of text to speak.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub text: String,
    /// Cut at a word boundary inside a clause (so the voice could start early, or because the
    /// text had no punctuation for [`MAX_WORDS`] words): the clause runs on in the next chunk,
    /// and the speech of the two should meet without a pause.
    pub mid_clause: bool,
}

#[derive(Debug, Default)]
pub struct Chunker {
    pending: String,
    emitted_any: bool,
}

impl Chunker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whole sentences only, from the first on (no early first clause): for text that is all
    /// there or arrives as sentences, as a Wyoming client streams it.
    pub fn sentences() -> Self {
        Self {
            pending: String::new(),
            emitted_any: true,
        }
    }

    /// Adds a piece of text; returns the chunks that are now complete.
    pub fn push(&mut self, piece: &str) -> Vec<String> {
        self.push_chunks(piece)
            .into_iter()
            .map(|c| c.text)
            .collect()
    }

    /// As [`Chunker::push`], saying of each chunk whether it was cut inside a clause.
    pub fn push_chunks(&mut self, piece: &str) -> Vec<Chunk> {
        self.pending.push_str(piece);
        let mut out = Vec::new();
        while let Some((end, mid_clause)) = self.boundary() {
            let chunk: String = self.pending.drain(..end).collect();
            let text = chunk.trim().to_string();
            if !text.is_empty() {
                out.push(Chunk { text, mid_clause });
                self.emitted_any = true;
            }
        }
        out
    }

    /// The rest, at the end of the stream.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.pending);
        let rest = rest.trim();
        (!rest.is_empty()).then(|| rest.to_string())
    }

    /// As [`Chunker::finish`], as a chunk (which ends the text, so no clause runs on).
    pub fn finish_chunk(&mut self) -> Option<Chunk> {
        self.finish().map(|text| Chunk {
            text,
            mid_clause: false,
        })
    }

    /// Byte index just past the first complete chunk in `pending`, if any, and whether that
    /// chunk stops inside a clause.
    fn boundary(&self) -> Option<(usize, bool)> {
        let text = &self.pending;
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let mut words = 0;
        let mut in_word = false;
        for (n, &(i, c)) in chars.iter().enumerate() {
            if c.is_whitespace() {
                if in_word {
                    words += 1;
                }
                in_word = false;
            } else {
                in_word = true;
            }
            // A boundary needs to see what follows: whitespace (or a newline for lists).
            let Some(&(next_i, next)) = chars.get(n + 1) else {
                break;
            };
            let words_here = words + usize::from(in_word);
            if c == '\n' && words_here > 0 {
                return Some((next_i, false));
            }
            if !next.is_whitespace() {
                continue;
            }
            let after = next_i;
            match c {
                '.' if self.is_sentence_period(i) => return Some((after, false)),
                '!' | '?' | ';' => return Some((after, false)),
                ',' | ':' => {
                    let min = if self.emitted_any {
                        LONG_CHUNK_WORDS
                    } else {
                        FIRST_CLAUSE_MIN_WORDS
                    };
                    if words_here >= min {
                        return Some((after, false));
                    }
                }
                _ => {}
            }
            if words_here >= MAX_WORDS && c.is_alphanumeric() {
                return Some((after, true));
            }
            if !self.emitted_any
                && FIRST_CHUNK_WORDS.contains(&words_here)
                && c.is_alphanumeric()
                && !self.ends_on_dangling_word(i + c.len_utf8())
            {
                return Some((after, true));
            }
        }
        None
    }

    /// Whether the word ending at byte `end` of `pending` leaves the phrase hanging.
    fn ends_on_dangling_word(&self, end: usize) -> bool {
        let word = self.pending[..end]
            .rsplit(char::is_whitespace)
            .next()
            .unwrap_or("")
            .to_lowercase();
        DANGLING.contains(&word.as_str())
    }

    /// Whether the '.' at byte `i` ends a sentence (not an abbreviation, a list number or an
    /// initial).
    fn is_sentence_period(&self, i: usize) -> bool {
        let before = &self.pending[..i];
        let word = before
            .rsplit(|c: char| c.is_whitespace() || c == '(' || c == '"')
            .next()
            .unwrap_or("");
        let lower = word.to_lowercase();
        if ABBREVIATIONS.contains(&lower.as_str()) {
            return false;
        }
        // "1." at the start of a line is a list marker; a single capital is an initial.
        let line_start = before
            .rfind('\n')
            .map(|n| before[n + 1..].trim().len() == word.len())
            .unwrap_or(before.trim().len() == word.len());
        if line_start && !word.is_empty() && word.chars().all(|c| c.is_ascii_digit()) {
            return false;
        }
        if word.len() == 1 && word.chars().all(|c| c.is_ascii_uppercase()) {
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentence_mode_cuts_only_at_sentence_ends() {
        let mut c = Chunker::sentences();
        assert_eq!(
            c.push("The first sentence comes early, as it should. The second "),
            vec!["The first sentence comes early, as it should."]
        );
        assert!(c.push("one follows").is_empty());
        assert_eq!(c.finish().as_deref(), Some("The second one follows"));
    }

    /// Feeds text a few characters at a time, as tokens arrive.
    fn chunks(text: &str) -> Vec<String> {
        let mut c = Chunker::new();
        let mut out = Vec::new();
        let chars: Vec<char> = text.chars().collect();
        for piece in chars.chunks(3) {
            out.extend(c.push(&piece.iter().collect::<String>()));
        }
        out.extend(c.finish());
        out
    }

    #[test]
    fn first_clause_goes_out_early() {
        // At a comma after three words…
        let mut c = Chunker::new();
        assert_eq!(c.push("Yes it is, the"), vec!["Yes it is,"]);
        // …or after four to six words at a word that does not leave it hanging.
        let mut c = Chunker::new();
        assert!(c.push("The capital of").is_empty());
        assert!(
            c.push(" France").is_empty(),
            "a word is complete only at the next space"
        );
        assert_eq!(c.push(" is Paris"), vec!["The capital of France"]);
        let mut c = Chunker::new();
        assert_eq!(
            chunks_of(&mut c, "It is one of the most beautiful cities"),
            vec!["It is one of the most"],
            "\"of\" and \"the\" leave it hanging; six words is the longest wait"
        );
    }

    fn chunks_of(c: &mut Chunker, text: &str) -> Vec<String> {
        text.split_inclusive(' ').flat_map(|w| c.push(w)).collect()
    }

    #[test]
    fn sentences_split_but_abbreviations_do_not() {
        assert_eq!(
            chunks(
                "Hello there. Dr. Smith met Mrs. Jones at 5 p.m. today. They talked, e.g. about tea. Fine!"
            ),
            vec![
                "Hello there.",
                "Dr. Smith met Mrs. Jones at 5 p.m. today.",
                "They talked, e.g. about tea.",
                "Fine!"
            ]
        );
    }

    #[test]
    fn decimals_and_thousands_stay_whole() {
        assert_eq!(
            chunks("So, pi is about 3.14159 and the price is 1,299.99 dollars. Done."),
            vec![
                "So, pi is about 3.14159",
                "and the price is 1,299.99 dollars.",
                "Done."
            ]
        );
    }

    #[test]
    fn list_items_split_on_lines_not_on_their_numbers() {
        assert_eq!(
            chunks("You need:\n1. Flour\n2. Eggs\n3. Milk"),
            vec!["You need:", "1. Flour", "2. Eggs", "3. Milk"]
        );
    }

    #[test]
    fn text_without_punctuation_is_cut_at_word_boundaries() {
        let words: Vec<String> = (0..70).map(|i| format!("word{i}")).collect();
        let out = chunks(&words.join(" "));
        assert!(out.len() >= 3, "{out:?}");
        for c in &out {
            assert!(c.split_whitespace().count() <= MAX_WORDS, "{c}");
        }
        assert_eq!(out.join(" "), words.join(" "), "nothing lost");
    }

    #[test]
    fn a_chunk_says_whether_it_was_cut_inside_a_clause() {
        let mut c = Chunker::new();
        let words: Vec<String> = (0..35).map(|i| format!("w{i}")).collect();
        let text = format!(
            "The capital of France is Paris, as you know. Lists:\n1. milk\n2. bread\n{}",
            words.join(" ")
        );
        let mut got: Vec<(String, bool)> = c
            .push_chunks(&text)
            .into_iter()
            .map(|c| (c.text, c.mid_clause))
            .collect();
        got.extend(c.finish_chunk().map(|c| (c.text, c.mid_clause)));
        let want: Vec<(String, bool)> = [
            // Cut early at a word boundary: the clause runs on.
            ("The capital of France", true),
            ("is Paris, as you know.", false),
            ("Lists:", false),
            ("1. milk", false),
            ("2. bread", false),
        ]
        .into_iter()
        .map(|(t, m)| (t.to_string(), m))
        .chain([
            // Thirty words with no punctuation: cut, and the text runs on.
            (words[..MAX_WORDS].join(" "), true),
            (words[MAX_WORDS..].join(" "), false),
        ])
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn nothing_is_lost() {
        let text = "Hello! How are you? I am fine; thanks. The end";
        assert_eq!(chunks(text).join(" "), text);
    }
}
