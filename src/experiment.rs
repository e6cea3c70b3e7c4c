//! The reproduction table: methods compared on the same SFT model over several seeds.

use serde::{Deserialize, Serialize};

/// One finished run of one method and seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub setting: String,
    pub method: String,
    pub seed: u64,
    /// Held-out win rate against the SFT model, ties half.
    pub win_rate: f32,
    pub mean_score: f32,
}

/// Two-sided 97.5% quantile of Student's t with `df` degrees of freedom.
fn t975(df: usize) -> f64 {
    const TABLE: [f64; 10] = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228];
    match df {
        0 => f64::NAN,
        1..=10 => TABLE[df - 1],
        _ => 1.96,
    }
}

/// Mean and the half-width of its 95% confidence interval (t-distribution over seeds).
pub fn mean_ci(xs: &[f64]) -> (f64, f64) {
    let n = xs.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return (mean, f64::NAN);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, t975(n - 1) * (var / n as f64).sqrt())
}

fn cell(xs: &[f64]) -> String {
    let (m, h) = mean_ci(xs);
    if h.is_nan() { format!("{m:.3}") } else { format!("{m:.3} ± {h:.3}") }
}

/// A markdown table per setting, methods in the order given.
pub fn table(outcomes: &[Outcome], setting: &str, methods: &[&str]) -> String {
    let mut s = String::from("| method | seeds | win rate vs SFT (95% CI) | mean score (95% CI) |\n| --- | --- | --- | --- |\n");
    for method in methods {
        let rows: Vec<&Outcome> = outcomes.iter().filter(|o| o.setting == setting && o.method == *method).collect();
        if rows.is_empty() {
            continue;
        }
        let wins: Vec<f64> = rows.iter().map(|o| o.win_rate as f64).collect();
        let scores: Vec<f64> = rows.iter().map(|o| o.mean_score as f64).collect();
        s.push_str(&format!("| {method} | {} | {} | {} |\n", rows.len(), cell(&wins), cell(&scores)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_uses_students_t() {
        let (m, h) = mean_ci(&[1.0, 2.0, 3.0]);
        assert!((m - 2.0).abs() < 1e-12);
        // sd = 1, n = 3: 4.303 / sqrt(3).
        assert!((h - 4.303 / 3f64.sqrt()).abs() < 1e-9);
        assert!(mean_ci(&[5.0]).1.is_nan());
    }

    #[test]
    fn table_lists_each_method_once() {
        let o = |method: &str, seed, w| Outcome { setting: "a".into(), method: method.into(), seed, win_rate: w, mean_score: 0.5 };
        let t = table(&[o("sgpo", 0, 0.6), o("sgpo", 1, 0.7), o("sft", 0, 0.5)], "a", &["sgpo", "spin", "sft"]);
        assert!(t.contains("| sgpo | 2 | 0.650 ± "));
        assert!(t.contains("| sft | 1 | 0.500 | 0.500 |"));
        assert!(!t.contains("spin"));
    }
}
