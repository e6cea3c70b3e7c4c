//! Built-in instruction tasks whose right answer a program knows: the default data, and with
//! the judge (`judge.rs`) the yardstick for SFT and SGPO alike.

use super::Example;
use crate::config::Phrasing;
use crate::rng::Rng;

/// Raised whenever the generator's output changes, so stored models trained on the old tasks
/// (the experiment's SFT store) are not taken for new ones.
/// Version 2: longer lists for sort, reverse and dedupe, and the multi-step families `prefix`
/// and `tally`, where an answer can be partly right and a fix can be partial.
pub const GENERATOR_VERSION: u32 = 2;

/// The task families, in a fixed order (their index seeds nothing else).
pub const FAMILIES: &[&str] = &[
    "sort", "reverse", "add", "dedupe", "count", "upper", "max", "last", "length", "prefix", "tally",
];

/// The families whose answer is one word (a number or a word): an improvement there can only
/// be the whole answer, so they are reported apart from the families with multi-word answers.
pub const ONE_WORD_ANSWERS: &[&str] = &["add", "count", "max", "last", "length"];

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

/// Each distinct word of `ws` in order of first appearance, with how often it occurs.
fn first_appearances(ws: &[String]) -> Vec<(&str, usize)> {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for w in ws {
        match counts.iter_mut().find(|(seen, _)| seen == w) {
            Some((_, n)) => *n += 1,
            None => counts.push((w, 1)),
        }
    }
    counts
}

fn join<T: ToString>(items: &[T]) -> String {
    items.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(" ")
}

/// One example of `family`, drawn from `rng`, worded tersely.
pub fn make_example(family: &str, rng: &mut Rng) -> Example {
    make_phrased(family, rng, Phrasing::Terse)
}

fn make_phrased(family: &str, rng: &mut Rng, phrasing: Phrasing) -> Example {
    let terse = phrasing == Phrasing::Terse;
    let say = |short: String, chat: String| if terse { short } else { chat };
    let (prompt, answer) = match family {
        "sort" => {
            let xs = numbers(rng, 3, 9);
            let mut sorted = xs.clone();
            sorted.sort();
            let xs = join(&xs);
            let prompt = say(
                format!("sort the numbers: {xs}"),
                format!("Sort these numbers from smallest to largest: {xs}. Reply with only the sorted numbers, separated by spaces."),
            );
            (prompt, join(&sorted))
        }
        "reverse" => {
            let ws = words(rng, WORDS, 2, 7);
            let rev: Vec<_> = ws.iter().rev().cloned().collect();
            let ws = join(&ws);
            let prompt = say(
                format!("reverse the words: {ws}"),
                format!("Write these words in reverse order: {ws}. Reply with only the words, separated by spaces."),
            );
            (prompt, join(&rev))
        }
        "add" => {
            let (a, b) = (rng.below(50), rng.below(50));
            (say(format!("add: {a} + {b}"), format!("What is {a} + {b}? Reply with only the number.")), (a + b).to_string())
        }
        "dedupe" => {
            let ws = words(rng, LETTERS, 4, 10);
            let seen: Vec<&str> = first_appearances(&ws).into_iter().map(|(w, _)| w).collect();
            let answer = join(&seen);
            let ws = join(&ws);
            let prompt = say(
                format!("remove duplicates: {ws}"),
                format!("Remove the repeated letters from this list, keeping the first of each: {ws}. Reply with only the letters that remain, separated by spaces."),
            );
            (prompt, answer)
        }
        "count" => {
            let ws = words(rng, &LETTERS[..4], 3, 7);
            let target = rng.choose(&LETTERS[..4]).to_string();
            let n = ws.iter().filter(|w| **w == target).count();
            let ws = join(&ws);
            let prompt = say(
                format!("count {target} in: {ws}"),
                format!("How many times does the letter {target} appear in this list: {ws}? Reply with only the number."),
            );
            (prompt, n.to_string())
        }
        "upper" => {
            let ws = join(&words(rng, WORDS, 1, 3));
            let prompt = say(format!("uppercase: {ws}"), format!("Write these words in capital letters: {ws}. Reply with only the words."));
            (prompt, ws.to_uppercase())
        }
        "max" => {
            let xs = numbers(rng, 3, 6);
            let m = xs.iter().max().copied().unwrap_or(0);
            let xs = join(&xs);
            let prompt = say(format!("largest number: {xs}"), format!("Which is the largest of these numbers: {xs}? Reply with only the number."));
            (prompt, m.to_string())
        }
        "last" => {
            let ws = words(rng, WORDS, 2, 5);
            let last = ws.last().cloned().unwrap_or_default();
            let ws = join(&ws);
            (say(format!("last word: {ws}"), format!("What is the last word in this list: {ws}? Reply with only the word.")), last)
        }
        "length" => {
            let ws = words(rng, WORDS, 1, 6);
            let n = ws.len();
            let ws = join(&ws);
            (say(format!("how many words: {ws}"), format!("How many words are in this list: {ws}? Reply with only the number.")), n.to_string())
        }
        "prefix" => {
            // Each total builds on the one before: one wrong step shifts every later one.
            let xs = numbers(rng, 3, 6);
            let totals: Vec<u32> = xs.iter().scan(0, |sum, x| { *sum += x; Some(*sum) }).collect();
            let xs = join(&xs);
            let prompt = say(
                format!("running totals: {xs}"),
                format!("Write the running totals of these numbers (each number plus all the numbers before it): {xs}. Reply with only the totals, separated by spaces."),
            );
            (prompt, join(&totals))
        }
        "tally" => {
            let ws = words(rng, &LETTERS[..4], 3, 8);
            let answer = first_appearances(&ws).iter().map(|(l, n)| format!("{l} {n}")).collect::<Vec<_>>().join(" ");
            let ws = join(&ws);
            let prompt = say(
                format!("count each letter: {ws}"),
                format!("Count how often each letter appears in this list, in order of first appearance: {ws}. Reply with only each letter followed by its count, separated by spaces."),
            );
            (prompt, answer)
        }
        other => panic!("unknown task family {other:?}"),
    };
    Example {
        prompt,
        response: answer,
        task: Some(family.to_string()),
    }
}

/// `n` tersely worded examples cycling through every family, reproducible from `seed`.
pub fn generate(n: usize, seed: u64) -> Vec<Example> {
    generate_phrased(n, seed, Phrasing::Terse)
}

fn generate_phrased(n: usize, seed: u64, phrasing: Phrasing) -> Vec<Example> {
    let mut rng = Rng::new(seed);
    (0..n).map(|i| make_phrased(FAMILIES[i % FAMILIES.len()], &mut rng, phrasing)).collect()
}

/// The built-in train and held-out sets, worded tersely. Held-out prompts never appear in the
/// train set.
pub fn builtin_split(n_train: usize, n_eval: usize, seed: u64) -> (Vec<Example>, Vec<Example>) {
    builtin_split_phrased(n_train, n_eval, seed, Phrasing::Terse)
}

/// [`builtin_split`] worded as `phrasing` says: the same problems, split the same way.
pub fn builtin_split_phrased(n_train: usize, n_eval: usize, seed: u64, phrasing: Phrasing) -> (Vec<Example>, Vec<Example>) {
    let train = generate_phrased(n_train, seed, phrasing);
    let seen: std::collections::HashSet<&str> = train.iter().map(|e| e.prompt.as_str()).collect();
    let mut rng = Rng::new(seed).fork(0xe7a1);
    let mut eval = Vec::with_capacity(n_eval);
    let mut i = 0;
    // Bounded: a family with fewer distinct prompts than asked for simply contributes repeats
    // of the held-out ones it has.
    while eval.len() < n_eval && i < n_eval * 50 {
        let e = make_phrased(FAMILIES[i % FAMILIES.len()], &mut rng, phrasing);
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
            "running totals" => {
                let mut sum = 0;
                numbers().into_iter().map(|x| { sum += x; sum.to_string() }).collect::<Vec<_>>().join(" ")
            }
            "count each letter" => {
                let mut letters: Vec<&str> = Vec::new();
                items.iter().for_each(|w| if !letters.contains(w) { letters.push(w) });
                letters.iter().map(|l| format!("{l} {}", items.iter().filter(|w| *w == l).count())).collect::<Vec<_>>().join(" ")
            }
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
    fn chat_wording_asks_the_same_questions() {
        let (terse, terse_eval) = builtin_split(300, 60, 4);
        let (chat, chat_eval) = builtin_split_phrased(300, 60, 4, Phrasing::Chat);
        assert_eq!((terse.len(), terse_eval.len()), (chat.len(), chat_eval.len()));
        for (t, c) in terse.iter().chain(&terse_eval).zip(chat.iter().chain(&chat_eval)) {
            assert_eq!((&t.response, &t.task), (&c.response, &c.task));
            let (_, operands) = t.prompt.split_once(": ").unwrap();
            assert!(c.prompt.contains(operands) && c.prompt.contains("Reply with only"), "{} / {}", t.prompt, c.prompt);
            assert!(c.prompt.starts_with(char::is_uppercase), "{}", c.prompt);
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
