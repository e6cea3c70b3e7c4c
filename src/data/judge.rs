//! The judge: a response's closeness to the reference answer, in [0, 1] (SGPO.md, "How it is
//! judged without GPT-4"), and the edit distance it rests on.

fn normalize(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Edits (insertions, deletions, substitutions) that turn `a` into `b`.
pub fn levenshtein<T: PartialEq>(a: &[T], b: &[T]) -> usize {
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

/// Where a candidate scored `new` stands against one scored `old`, as an index into a
/// (better, tied, worse) count.
pub fn verdict(new: f32, old: f32) -> usize {
    match new.partial_cmp(&old) {
        Some(std::cmp::Ordering::Greater) => 0,
        Some(std::cmp::Ordering::Equal) => 1,
        _ => 2,
    }
}

pub fn exact_match(response: &str, reference: &str) -> bool {
    normalize(response) == normalize(reference)
}

#[cfg(test)]
mod tests {
    use super::*;

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
