//! Spoken formatting: "comma", "period", "new line", "scratch that" said while dictating become
//! what they name.
//!
//! Whisper writes what it hears and punctuates it itself: "Hello comma world period." A
//! command is matched on words (case and Whisper's punctuation ignored), longest phrase
//! first. When an utterance holds a spoken punctuation command, the speaker is punctuating:
//! Whisper's own punctuation is dropped and only the spoken marks remain ("Hello, world.");
//! otherwise Whisper's punctuation stays. A letter after a sentence end or a line break is
//! capitalised. "Scratch that" removes what came before it in the utterance, or, said on its
//! own, the previous utterance ([`Formatted::scratch_previous`]).

/// What a spoken phrase becomes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mark {
    /// A punctuation mark joined to the word before it (",", ".", "?").
    Punct(String),
    /// Text that breaks the line ("\n", "\n\n"); no space around it.
    Break(String),
    /// Text put in as a word of its own (the user's phrases: "smiley" → ":)").
    Text(String),
    /// Removes what was said before it.
    Scratch,
}

/// The phrases sotto knows, and the user's own.
#[derive(Clone, Debug)]
pub struct SpokenFormatting {
    /// (phrase as lower-case words, mark), longest phrase first.
    phrases: Vec<(Vec<String>, Mark)>,
}

impl Default for SpokenFormatting {
    fn default() -> Self {
        let p = |s: &str| Mark::Punct(s.into());
        Self::new([
            ("comma", p(",")),
            ("period", p(".")),
            ("full stop", p(".")),
            ("question mark", p("?")),
            ("exclamation mark", p("!")),
            ("exclamation point", p("!")),
            ("colon", p(":")),
            ("semicolon", p(";")),
            ("new line", Mark::Break("\n".into())),
            ("new paragraph", Mark::Break("\n\n".into())),
            ("scratch that", Mark::Scratch),
        ])
    }
}

/// One utterance after formatting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Formatted {
    pub text: String,
    /// "Scratch that" came first: the previous utterance is to be removed.
    pub scratch_previous: bool,
}

fn word_key(w: &str) -> String {
    w.chars()
        .filter(|c| c.is_alphanumeric() || *c == '\'')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Words that are also ordinary words ("the trial period ended", "the colon"): a mark only
/// where the speaker plainly said it as one ([`SpokenFormatting::said_as_mark`]).
const AMBIGUOUS: [&str; 2] = ["period", "colon"];

fn ends_in_punctuation(w: &str) -> bool {
    w.ends_with(['.', ',', '?', '!', ';', ':'])
}

impl SpokenFormatting {
    /// An ambiguous word at `i` is a mark when it ends the utterance, when Whisper heard a
    /// break right before or after it ("done. Period." / "world period."), or when another
    /// spoken mark follows it ("period new line").
    fn said_as_mark(&self, words: &[&str], i: usize) -> bool {
        let last = i + 1 == words.len();
        let break_after = ends_in_punctuation(words[i]);
        let break_before = i > 0 && ends_in_punctuation(words[i - 1]);
        let mark_follows = i + 1 < words.len() && {
            let next: Vec<String> = words[i + 1..].iter().map(|w| word_key(w)).collect();
            self.phrases
                .iter()
                .any(|(p, _)| next.len() >= p.len() && next[..p.len()] == p[..])
        };
        last || break_after || break_before || mark_follows
    }

    pub fn new<'a>(phrases: impl IntoIterator<Item = (&'a str, Mark)>) -> Self {
        let mut phrases: Vec<(Vec<String>, Mark)> = phrases
            .into_iter()
            .map(|(p, m)| (p.split_whitespace().map(word_key).collect(), m))
            .filter(|(words, _): &(Vec<String>, Mark)| !words.is_empty())
            .collect();
        phrases.sort_by_key(|(words, _)| std::cmp::Reverse(words.len()));
        Self { phrases }
    }

    /// Adds (or replaces) a phrase: the user's own, e.g. "smiley" → ":)".
    pub fn with(mut self, phrase: &str, output: &str) -> Self {
        let words: Vec<String> = phrase.split_whitespace().map(word_key).collect();
        if words.is_empty() {
            return self;
        }
        self.phrases.retain(|(w, _)| *w != words);
        let mark = if output.contains('\n') {
            Mark::Break(output.into())
        } else if output.chars().count() == 1 && output.chars().all(|c| c.is_ascii_punctuation()) {
            Mark::Punct(output.into())
        } else {
            Mark::Text(output.into())
        };
        self.phrases.push((words, mark));
        self.phrases
            .sort_by_key(|(words, _)| std::cmp::Reverse(words.len()));
        self
    }

    pub fn apply(&self, text: &str) -> Formatted {
        let words: Vec<&str> = text.split_whitespace().collect();
        let keys: Vec<String> = words.iter().map(|w| word_key(w)).collect();
        // Pieces: a spoken word (as Whisper wrote it) or a mark.
        enum Piece<'a> {
            Word(&'a str),
            Mark(&'a Mark),
        }
        let mut pieces: Vec<Piece> = Vec::new();
        let mut i = 0;
        'words: while i < words.len() {
            for (phrase, mark) in &self.phrases {
                let n = phrase.len();
                if i + n <= words.len()
                    && keys[i..i + n] == phrase[..]
                    && (!AMBIGUOUS.contains(&keys[i].as_str()) || self.said_as_mark(&words, i))
                {
                    pieces.push(Piece::Mark(mark));
                    i += n;
                    continue 'words;
                }
            }
            pieces.push(Piece::Word(words[i]));
            i += 1;
        }
        // "Scratch that": only what follows the last one counts.
        let mut scratch_previous = false;
        if let Some(last) = pieces
            .iter()
            .rposition(|p| matches!(p, Piece::Mark(Mark::Scratch)))
        {
            scratch_previous = last == 0;
            pieces.drain(..=last);
        }
        let punctuating = pieces
            .iter()
            .any(|p| matches!(p, Piece::Mark(Mark::Punct(_) | Mark::Break(_))));
        let mut out = String::new();
        let mut capital = false;
        for piece in &pieces {
            match piece {
                Piece::Word(w) => {
                    let w: String = if punctuating {
                        // Whisper's own marks and quotes: the speaker punctuates now.
                        w.trim_matches(|c: char| ".,?!;:\"".contains(c)).to_string()
                    } else {
                        w.to_string()
                    };
                    if w.is_empty() {
                        continue;
                    }
                    if !out.is_empty() && !out.ends_with('\n') {
                        out.push(' ');
                    }
                    if capital || out.is_empty() {
                        let mut c = w.chars();
                        if let Some(first) = c.next() {
                            out.extend(first.to_uppercase());
                            out.push_str(c.as_str());
                        }
                    } else {
                        out.push_str(&w);
                    }
                    capital = false;
                }
                Piece::Mark(Mark::Punct(p)) => {
                    while out.ends_with(' ') {
                        out.pop();
                    }
                    out.push_str(p);
                    capital = p.ends_with(['.', '?', '!']);
                }
                Piece::Mark(Mark::Break(b)) => {
                    while out.ends_with(' ') {
                        out.pop();
                    }
                    out.push_str(b);
                    capital = true;
                }
                Piece::Mark(Mark::Text(t)) => {
                    if !out.is_empty() && !out.ends_with('\n') {
                        out.push(' ');
                    }
                    out.push_str(t);
                }
                Piece::Mark(Mark::Scratch) => {}
            }
        }
        Formatted {
            text: out.trim().to_string(),
            scratch_previous,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(text: &str) -> String {
        SpokenFormatting::default().apply(text).text
    }

    #[test]
    fn spoken_marks_replace_whispers_punctuation() {
        assert_eq!(
            f("Hello comma world period new line second line."),
            "Hello, world.\nSecond line"
        );
        assert_eq!(
            f("Hello, comma, world. Period. New line, second line."),
            "Hello, world.\nSecond line"
        );
        assert_eq!(
            f("is it ready question mark new paragraph yes full stop"),
            "Is it ready?\n\nYes."
        );
    }

    #[test]
    fn period_and_colon_as_ordinary_words_stay_words() {
        assert_eq!(
            f("The trial period ended in May."),
            "The trial period ended in May."
        );
        assert_eq!(
            f("The colon is part of the gut."),
            "The colon is part of the gut."
        );
        assert_eq!(f("It ended period"), "It ended.");
        assert_eq!(f("Dear team colon new line hello"), "Dear team:\nHello");
    }

    #[test]
    fn without_spoken_marks_whispers_punctuation_stays() {
        assert_eq!(
            f("Hello, world. How are you?"),
            "Hello, world. How are you?"
        );
    }

    #[test]
    fn scratch_that_removes_what_came_before() {
        let s = SpokenFormatting::default();
        let r = s.apply("Send it to Bob. Scratch that. Send it to Alice.");
        assert_eq!(r.text, "Send it to Alice.");
        assert!(!r.scratch_previous);
        let r = s.apply("Scratch that.");
        assert_eq!(r.text, "");
        assert!(r.scratch_previous);
        let r = s.apply("Scratch that, the meeting is at noon.");
        assert_eq!(r.text, "The meeting is at noon.");
        assert!(r.scratch_previous);
    }

    #[test]
    fn own_phrases_and_none() {
        let s = SpokenFormatting::default().with("smiley", ":)");
        assert_eq!(s.apply("great comma smiley").text, "Great, :)");
        let none = SpokenFormatting::new([]);
        assert_eq!(none.apply("hello comma world").text, "Hello comma world");
    }
}
