//! Validation never panics on input: random edits of a file that uses every key still produce
//! either a pipeline or diagnostics that each carry a position inside the text.

#![allow(clippy::unwrap_used)] // helpers of a test crate, not only #[test] fns

use baton::config;
use proptest::prelude::*;

const SOURCE: &str = include_str!("data/valid/every_key.yaml");

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200)
    ))]

    #[test]
    fn random_edits_never_panic(
        start in 0usize..SOURCE.len(),
        cut in 0usize..40,
        insert in "[ \n:\\-\\[\\]{}'\"#&*a-z0-9]{0,6}",
    ) {
        let mut text: Vec<char> = SOURCE.chars().collect();
        let start = start.min(text.len());
        let end = (start + cut).min(text.len());
        text.splice(start..end, insert.chars());
        let text: String = text.into_iter().collect();
        let lines = text.lines().count().max(1);
        if let Err(diagnostics) = config::load_pipeline_str("fuzz.yaml", &text) {
            prop_assert!(!diagnostics.is_empty());
            for d in &diagnostics.items {
                prop_assert!(d.line >= 1 && d.line <= lines + 1, "{d}");
                let _ = d.to_string();
            }
        }
    }
}
