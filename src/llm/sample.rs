//! Choosing the next token from the logits: greedy, or temperature with nucleus (top-p)
//! sampling from a seeded generator (the same seed gives the same reply), after a repetition
//! penalty on recent tokens.

use super::GenParams;

/// What [`Sampler::sample`] picked.
pub struct Sampled {
    pub token: u32,
    /// False when the logits held NaN or infinity (a corrupt model).
    pub is_finite_logits: bool,
}

pub struct Sampler {
    temperature: f64,
    top_p: Option<f64>,
    repeat_penalty: f32,
    state: u64,
    /// Reused buffer of (token, probability).
    probs: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(params: &GenParams) -> Self {
        Self {
            temperature: params.temperature,
            top_p: params.top_p,
            repeat_penalty: params.repeat_penalty,
            state: params.seed,
            probs: Vec::new(),
        }
    }

    /// splitmix64: small, fast and plenty for sampling.
    fn uniform(&mut self) -> f32 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Picks the next token. `logits` is modified (penalty applied); `recent` are the tokens
    /// the repetition penalty looks at.
    pub fn sample(&mut self, logits: &mut [f32], recent: &[u32]) -> Sampled {
        if !logits.iter().all(|l| l.is_finite()) {
            return Sampled {
                token: 0,
                is_finite_logits: false,
            };
        }
        if self.repeat_penalty != 1.0 {
            let mut seen = recent.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for &t in &seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l >= 0.0 {
                        *l / self.repeat_penalty
                    } else {
                        *l * self.repeat_penalty
                    };
                }
            }
        }
        let argmax = || {
            logits
                .iter()
                .enumerate()
                .fold((0usize, f32::NEG_INFINITY), |best, (i, &l)| {
                    if l > best.1 { (i, l) } else { best }
                })
                .0 as u32
        };
        if self.temperature <= 0.0 {
            return Sampled {
                token: argmax(),
                is_finite_logits: true,
            };
        }
        let t = self.temperature as f32;
        let max = logits.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l));
        self.probs.clear();
        let mut total = 0f32;
        for (i, &l) in logits.iter().enumerate() {
            let p = ((l - max) / t).exp();
            total += p;
            self.probs.push((i as u32, p));
        }
        // Nucleus: the most likely tokens whose probabilities add up to top_p.
        let mut keep = self.probs.len();
        if let Some(top_p) = self.top_p.filter(|p| *p < 1.0) {
            self.probs
                .sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let mut cum = 0f32;
            for (i, (_, p)) in self.probs.iter().enumerate() {
                cum += p / total;
                if cum >= top_p as f32 {
                    keep = i + 1;
                    break;
                }
            }
            total = self.probs[..keep].iter().map(|(_, p)| p).sum();
        }
        let mut r = self.uniform() * total;
        for &(tok, p) in &self.probs[..keep] {
            if r < p {
                return Sampled {
                    token: tok,
                    is_finite_logits: true,
                };
            }
            r -= p;
        }
        Sampled {
            token: self.probs[keep - 1].0,
            is_finite_logits: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f64, seed: u64) -> GenParams {
        GenParams {
            temperature,
            top_p: Some(0.9),
            seed,
            repeat_penalty: 1.0,
            ..GenParams::default()
        }
    }

    #[test]
    fn greedy_takes_the_largest_and_the_penalty_lowers_repeats() {
        let mut s = Sampler::new(&params(0.0, 1));
        assert_eq!(s.sample(&mut [0.1, 2.0, 1.9], &[]).token, 1);
        let mut s = Sampler::new(&GenParams {
            repeat_penalty: 1.5,
            ..params(0.0, 1)
        });
        assert_eq!(s.sample(&mut [0.1, 2.0, 1.9], &[1]).token, 2);
    }

    #[test]
    fn the_same_seed_samples_the_same_and_top_p_cuts_the_tail() {
        let logits = [3.0, 2.9, 0.0, -5.0, -5.0];
        let run = |seed| {
            let mut s = Sampler::new(&params(1.0, seed));
            (0..200)
                .map(|_| s.sample(&mut logits.clone(), &[]).token)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        // Tokens 3 and 4 lie outside the 0.9 nucleus.
        assert!(run(7).iter().all(|&t| t <= 2));
        assert!(run(7).contains(&0) && run(7).contains(&1));
    }

    #[test]
    fn non_finite_logits_are_reported() {
        let mut s = Sampler::new(&params(0.0, 1));
        assert!(!s.sample(&mut [0.0, f32::NAN], &[]).is_finite_logits);
    }
}
