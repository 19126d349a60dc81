//! Tokens and cost per model over a window, one line per variant and model: the lines of
//! `/api/models` and of the overview's per-model table, from a window's increases.

use std::collections::{BTreeMap, BTreeSet};

use crate::point::Counts;

/// Tokens and cost of one model over a window.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ModelUsage {
    /// Variant.
    pub variant: String,
    /// Model name as the proxy labelled it (untrusted text: escape it when rendering).
    pub model: String,
    /// Input tokens.
    pub tokens_input: f64,
    /// Output tokens.
    pub tokens_output: f64,
    /// Cache-read tokens.
    pub tokens_cache_read: f64,
    /// Cache-write tokens.
    pub tokens_cache_write: f64,
    /// Estimated cost, all directions (USD).
    pub cost_usd: f64,
    /// Seconds of the window the variant's data covers (the window, or less when data starts
    /// later).
    pub covered_seconds: f64,
}

/// One line per variant and model, largest cost first (then most tokens, then name).
pub fn model_usage(counts: &BTreeMap<String, Counts>) -> Vec<ModelUsage> {
    model_usage_covered(counts, &BTreeMap::new())
}

/// [`model_usage`] with each variant's covered seconds.
pub(crate) fn model_usage_covered(
    counts: &BTreeMap<String, Counts>,
    covered: &BTreeMap<String, f64>,
) -> Vec<ModelUsage> {
    let mut out = Vec::new();
    for (variant, c) in counts {
        let models: BTreeSet<&crate::point::Label> = c.tokens.keys().chain(c.cost.keys()).collect();
        for model in models {
            let t = c.tokens.get(model).copied().unwrap_or_default();
            let cost = c.cost.get(model).copied().unwrap_or_default();
            out.push(ModelUsage {
                variant: variant.clone(),
                model: model.to_string(),
                tokens_input: t[0],
                tokens_output: t[1],
                tokens_cache_read: t[2],
                tokens_cache_write: t[3],
                cost_usd: cost.iter().fold(0.0, |a, b| a + b),
                covered_seconds: covered.get(variant).copied().unwrap_or(0.0),
            });
        }
    }
    let tokens = |m: &ModelUsage| m.tokens_input + m.tokens_output + m.tokens_cache_read + m.tokens_cache_write;
    out.sort_by(|a, b| {
        b.cost_usd.total_cmp(&a.cost_usd).then(tokens(b).total_cmp(&tokens(a))).then(a.model.cmp(&b.model))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_are_listed_per_variant_costliest_first() {
        let mut a = Counts::default();
        a.tokens.insert("glm-4.7".into(), [100.0, 50.0, 10.0, 0.0]);
        a.cost.insert("glm-4.7".into(), [0.1, 0.2, 0.0, 0.0]);
        a.tokens.insert("glm-4.5-air".into(), [1000.0, 0.0, 0.0, 0.0]);
        a.cost.insert("glm-4.5-air".into(), [0.5, 0.0, 0.0, 0.0]);
        let mut b = Counts::default();
        b.cost.insert("only-cost".into(), [0.0, 0.01, 0.0, 0.0]);
        let m = model_usage(&BTreeMap::from([("production".to_owned(), a), ("canary".to_owned(), b)]));
        let names: Vec<&str> = m.iter().map(|u| u.model.as_str()).collect();
        assert_eq!(names, ["glm-4.5-air", "glm-4.7", "only-cost"]);
        assert!((m[1].cost_usd - 0.3).abs() < 1e-12);
        assert_eq!(m[1].tokens_output, 50.0);
        assert_eq!(m[2].variant, "canary");
        assert_eq!(m[2].tokens_input, 0.0);
    }
}
