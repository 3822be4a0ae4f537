//! `baton validate` over 10,000 generated pipeline files of five steps each (chains, diamonds,
//! wide fan-ins; five time zones; templated overrides), as a process: wall time to its exit, the
//! median of `RUNS` (one run's figure moves by a fifth with what else the machine does).

use super::generate;
use super::output::{Report, Target};
use super::process::Scratch;
use super::Options;
use anyhow::{bail, Context};

/// Runs of `baton validate` the figure is the median of.
const RUNS: usize = 5;

pub async fn run(options: Options, report: &mut Report) -> anyhow::Result<()> {
    let files = if options.quick { 200 } else { 10_000 };
    let scratch = Scratch::new("validate", options.keep)?;
    let dir = scratch.join("pipelines");
    std::fs::create_dir_all(&dir)?;
    for i in 0..files {
        std::fs::write(dir.join(format!("v{i:05}.yaml")), generate::varied(i))?;
    }
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let began = std::time::Instant::now();
        let output = std::process::Command::new(&exe)
            .arg("validate")
            .arg(&dir)
            .output()
            .context("cannot run `baton validate`")?;
        times.push(began.elapsed().as_secs_f64());
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            bail!(
                "`baton validate` rejected the generated files ({}):\n{}",
                output.status,
                super::process::tail(&stderr, 20)
            );
        }
    }
    times.sort_by(f64::total_cmp);
    let elapsed = times[RUNS / 2];
    report.info(
        "validate",
        "validate_files",
        "pipeline files",
        files as f64,
        "",
    );
    report.measured(
        "validate",
        "validate_seconds",
        "validate wall time (median of 5 runs)",
        elapsed,
        "s",
        Target::Below(0.3),
    );
    Ok(())
}
