//! `baton why PIPELINE [STEP]`: in one sentence, what the pipeline or step is waiting for.

use super::api_client::{block_on, print_json, ApiClient, ControlArgs};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct WhyArgs {
    pub pipeline: String,
    /// A step of the pipeline's active run; the first step not yet done when absent.
    pub step: Option<String>,
    #[command(flatten)]
    pub control: ControlArgs,
}

pub fn run(args: &WhyArgs) -> ExitCode {
    block_on(async {
        let api = ApiClient::from_args(&args.control)?;
        let query: Vec<(&str, String)> = args.step.iter().map(|s| ("step", s.clone())).collect();
        let why: serde_json::Value = api
            .get(&["pipelines", &args.pipeline, "why"], &query)
            .await?;
        if args.control.json {
            print_json(&why);
        } else {
            let sentence = why["sentence"].as_str().unwrap_or_default();
            match why["href"].as_str() {
                Some(href) => println!("{sentence} ({href})"),
                None => println!("{sentence}"),
            }
        }
        Ok(())
    })
}
