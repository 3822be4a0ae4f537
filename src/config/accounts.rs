//! Checks loaded pipelines against the daemon config's accounts: a step naming an account the
//! config does not have is an error at the `account:` value's file:line:column. Pipeline files
//! are lowered without the daemon config (`baton validate DIR` has none), so this runs after,
//! re-reading a file only when one of its steps is in error.

use super::diagnostic::{Diagnostic, Diagnostics, FileReport};
use super::yaml::{self, Node, Span};
use crate::ids::AccountName;
use crate::model::pipeline::Pipeline;
use std::collections::BTreeSet;

fn entry<'n>(node: &'n Node, key: &str) -> Option<&'n Node> {
    node.as_mapping()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

/// Where a step's `account:` value is written, if the file still says so.
fn account_span(text: &str, step: &str) -> Option<Span> {
    let documents = yaml::parse(text).ok()?;
    let root = documents.first()?;
    let node = entry(entry(entry(root, "steps")?, step)?, "account")?;
    Some(node.span)
}

/// Every step whose account is not in `known`, as diagnostics.
pub fn check_accounts(
    pipelines: &[Pipeline],
    known: &BTreeSet<AccountName>,
) -> Result<(), Diagnostics> {
    let mut problems = Diagnostics::default();
    let names: Vec<&str> = known.iter().map(|a| a.0.as_ref()).collect();
    for pipeline in pipelines {
        let unknown: Vec<_> = pipeline
            .steps
            .iter()
            .filter(|s| !known.contains(&s.account))
            .collect();
        if unknown.is_empty() {
            continue;
        }
        let text = std::fs::read_to_string(&pipeline.source).unwrap_or_default();
        let mut report = FileReport::new(&pipeline.source, &text);
        for step in unknown {
            let message = format!(
                "step `{}` names the account `{}`, which the daemon config does not have",
                step.name, step.account
            );
            let hint = Some(format!(
                "the config has: {} (`dbt_cloud:` is `default`; add others under `accounts:`)",
                names.join(", ")
            ));
            match account_span(&text, &step.name.0) {
                Some(span) => report.error(span, message, hint),
                None => report.diagnostics.push(Diagnostic {
                    file: pipeline.source.clone(),
                    line: 0,
                    column: 0,
                    message,
                    hint,
                    excerpt: None,
                    width: 0,
                }),
            }
        }
        problems.extend(report.diagnostics);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        problems.sort();
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_account_is_reported_at_its_value() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cross.yaml");
        let yaml = "name: cross\nsteps:\n  a: { job_id: 1 }\n  b:\n    job_id: 2\n    account: emea\n    depends_on: [a]\n";
        std::fs::write(&file, yaml).unwrap();
        let pipelines = crate::config::load_pipelines(std::slice::from_ref(&file)).unwrap();
        let mut known = BTreeSet::from([AccountName::default()]);
        let err = check_accounts(&pipelines, &known).unwrap_err();
        let d = &err.items[0];
        assert_eq!((d.line, d.column), (6, 14), "{err}");
        assert!(d.message.contains("`emea`"), "{}", d.message);
        assert!(d.hint.as_deref().unwrap().contains("default"));
        known.insert(AccountName("emea".into()));
        assert!(check_accounts(&pipelines, &known).is_ok());
    }
}
