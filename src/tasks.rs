//! Built-in instruction tasks whose right answer a program knows, and the judge that scores a
//! response by its closeness to that answer. They are the default data and the yardstick for
//! SFT and SGPO alike (SGPO.md, "How it is judged without GPT-4").

use crate::data::Example;
use crate::rng::Rng;

/// The task families, in a fixed order (their index seeds nothing else).
pub const FAMILIES: &[&str] = &[
    "sort", "reverse", "add", "dedupe", "count", "upper", "max", "last", "length",
];

const WORDS: &[&str] = &[
    "cat", "dog", "sun", "red", "blue", "tree", "fish", "bird", "rain", "star", "moon", "car",
    "book", "milk", "rock", "leaf", "snow", "lamp", "door", "ship",
];
const LETTERS: &[&str] = &["a", "b", "c", "d", "e", "f", "g", "h"];

fn numbers(rng: &mut Rng, lo: usize, hi: usize) -> Vec<u32> {
    let n = rng.range(lo, hi);
    (0..n).map(|_| rng.below(10) as u32).collect()
}

fn words(rng: &mut Rng, pool: &[&str], lo: usize, hi: usize) -> Vec<String> {
    let n = rng.range(lo, hi);
    (0..n).map(|_| rng.choose(pool).to_string()).collect()
}

fn join<T: ToString>(items: &[T]) -> String {
    items.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(" ")
}

/// One example of `family`, drawn from `rng`.
pub fn make_example(family: &str, rng: &mut Rng) -> Example {
    let (prompt, answer) = match family {
        "sort" => {
            let xs = numbers(rng, 3, 6);
            let mut sorted = xs.clone();
            sorted.sort();
            (format!("sort the numbers: {}", join(&xs)), join(&sorted))
        }
        "reverse" => {
            let ws = words(rng, WORDS, 2, 5);
            let rev: Vec<_> = ws.iter().rev().cloned().collect();
            (format!("reverse the words: {}", join(&ws)), join(&rev))
        }
        "add" => {
            let (a, b) = (rng.below(50), rng.below(50));
            (format!("add: {a} + {b}"), (a + b).to_string())
        }
        "dedupe" => {
            let ws = words(rng, LETTERS, 4, 7);
            let mut seen = Vec::new();
            for w in &ws {
                if !seen.contains(w) {
                    seen.push(w.clone());
                }
            }
            (format!("remove duplicates: {}", join(&ws)), join(&seen))
        }
        "count" => {
            let ws = words(rng, &LETTERS[..4], 3, 7);
            let target = rng.choose(&LETTERS[..4]).to_string();
            let n = ws.iter().filter(|w| **w == target).count();
            (format!("count {target} in: {}", join(&ws)), n.to_string())
        }
        "upper" => {
            let ws = words(rng, WORDS, 1, 3);
            (format!("uppercase: {}", join(&ws)), join(&ws).to_uppercase())
        }
        "max" => {
            let xs = numbers(rng, 3, 6);
            let m = xs.iter().max().copied().unwrap_or(0);
            (format!("largest number: {}", join(&xs)), m.to_string())
        }
        "last" => {
            let ws = words(rng, WORDS, 2, 5);
            (format!("last word: {}", join(&ws)), ws.last().cloned().unwrap_or_default())
        }
        "length" => {
            let ws = words(rng, WORDS, 1, 6);
            (format!("how many words: {}", join(&ws)), ws.len().to_string())
        }
        other => panic!("unknown task family {other:?}"),
    };
    Example {
        prompt,
        response: answer,
        task: Some(family.to_string()),
    }
}

/// `n` examples cycling through every family, reproducible from `seed`.
pub fn generate(n: usize, seed: u64) -> Vec<Example> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| make_example(FAMILIES[i % FAMILIES.len()], &mut rng))
        .collect()
}

/// The built-in train and held-out sets. Held-out prompts never appear in the train set.
pub fn builtin_split(n_train: usize, n_eval: usize, seed: u64) -> (Vec<Example>, Vec<Example>) {
    let train = generate(n_train, seed);
    let seen: std::collections::HashSet<&str> = train.iter().map(|e| e.prompt.as_str()).collect();
    let mut rng = Rng::new(seed).fork(0xe7a1);
    let mut eval = Vec::with_capacity(n_eval);
    let mut i = 0;
    // Bounded: a family with fewer distinct prompts than asked for simply contributes repeats
    // of the held-out ones it has.
    while eval.len() < n_eval && i < n_eval * 50 {
        let e = make_example(FAMILIES[i % FAMILIES.len()], &mut rng);
        if !seen.contains(e.prompt.as_str()) {
            eval.push(e);
        }
        i += 1;
    }
    (train, eval)
}

fn normalize(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn levenshtein(a: &[char], b: &[char]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Closeness of `response` to `reference` in [0, 1]: one minus the character edit distance
/// over the longer length, after folding white space. 1 means an exact match.
pub fn judge(response: &str, reference: &str) -> f32 {
    let a: Vec<char> = normalize(response).chars().collect();
    let b: Vec<char> = normalize(reference).chars().collect();
    let longest = a.len().max(b.len());
    if longest == 0 {
        return 1.0;
    }
    1.0 - levenshtein(&a, &b) as f32 / longest as f32
}

pub fn exact_match(response: &str, reference: &str) -> bool {
    normalize(response) == normalize(reference)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_a_right_answer() {
        let mut rng = Rng::new(1);
        for family in FAMILIES {
            let e = make_example(family, &mut rng);
            assert!(!e.prompt.is_empty() && !e.response.is_empty(), "{family}");
        }
        let e = make_example("sort", &mut Rng::new(5));
        let xs: Vec<u32> = e.response.split(' ').map(|x| x.parse().unwrap()).collect();
        assert!(xs.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn generation_is_seeded_and_split_is_disjoint() {
        assert_eq!(generate(20, 3), generate(20, 3));
        assert_ne!(generate(20, 3), generate(20, 4));
        let (train, eval) = builtin_split(500, 100, 9);
        assert_eq!(eval.len(), 100);
        for e in &eval {
            assert!(train.iter().all(|t| t.prompt != e.prompt));
        }
    }

    #[test]
    fn judge_scores_closeness() {
        assert_eq!(judge("1 2 3", "1 2 3"), 1.0);
        assert_eq!(judge(" 1  2 3 ", "1 2 3"), 1.0);
        assert_eq!(judge("", "abc"), 0.0);
        let near = judge("1 2 4", "1 2 3");
        let far = judge("9", "1 2 3");
        assert!(near > far && near < 1.0, "{near} {far}");
        assert!((judge("kitten", "sitting") - (1.0 - 3.0 / 7.0)).abs() < 1e-6);
        assert!(exact_match("cat  dog", "cat dog"));
    }
}
