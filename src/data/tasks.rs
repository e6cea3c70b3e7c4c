//! Built-in instruction tasks whose right answer a program knows: the default data, and with
//! the judge (`judge.rs`) the yardstick for SFT and SGPO alike.

use super::Example;
use crate::rng::Rng;

/// Raised whenever the generator's output changes, so stored models trained on the old tasks
/// (the experiment's SFT store) are not taken for new ones.
pub const GENERATOR_VERSION: u32 = 1;

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer, worked out again from the prompt's text alone.
    fn solve(prompt: &str) -> String {
        let (head, rest) = prompt.split_once(": ").expect("every prompt has a colon");
        let items: Vec<&str> = rest.split(' ').collect();
        let numbers = || items.iter().map(|x| x.parse::<u32>().unwrap()).collect::<Vec<_>>();
        match head {
            "sort the numbers" => {
                let mut xs = numbers();
                xs.sort();
                join(&xs)
            }
            "reverse the words" => items.iter().rev().copied().collect::<Vec<_>>().join(" "),
            "add" => {
                let (a, b) = rest.split_once(" + ").unwrap();
                (a.parse::<u32>().unwrap() + b.parse::<u32>().unwrap()).to_string()
            }
            "remove duplicates" => {
                let mut seen: Vec<&str> = Vec::new();
                items.iter().for_each(|w| if !seen.contains(w) { seen.push(w) });
                seen.join(" ")
            }
            "uppercase" => rest.to_uppercase(),
            "largest number" => numbers().into_iter().max().unwrap().to_string(),
            "last word" => items.last().unwrap().to_string(),
            "how many words" => items.len().to_string(),
            count => {
                let target = count.strip_prefix("count ").and_then(|c| c.strip_suffix(" in")).expect("a count prompt");
                items.iter().filter(|w| **w == target).count().to_string()
            }
        }
    }

    #[test]
    fn every_family_has_a_right_answer() {
        let examples = generate(FAMILIES.len() * 30, 1);
        for family in FAMILIES {
            assert!(examples.iter().any(|e| e.task.as_deref() == Some(family)), "{family}");
        }
        for e in &examples {
            assert_eq!(e.response, solve(&e.prompt), "{:?}: {}", e.task, e.prompt);
        }
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
}
