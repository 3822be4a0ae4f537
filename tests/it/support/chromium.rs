//! Headless Chromium (Debian's `chromium`) for the page tests: found, or the test says it was
//! skipped (and fails under `CI=true`, so CI never passes by skipping).

use std::process::Command;

/// The browser's command, or None after saying the test is skipped.
pub fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser"].into_iter().find(|name| {
        Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium is not installed, and CI=true: run .ci/install-test-deps"
        );
        println!("SKIPPED: chromium is not installed (apt-get install chromium; .ci/install-test-deps does it)");
    }
    found
}

/// Runs headless Chromium on `url` with `extra` arguments in a fresh profile; its stdout.
pub async fn browse(browser: &'static str, url: &str, extra: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("--user-data-dir={}", profile.path().display()));
    args.extend(extra.iter().cloned());
    args.push(url.to_string());
    let out = tokio::task::spawn_blocking(move || Command::new(browser).args(&args).output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The DOM Chromium built from `url`.
pub async fn dom(browser: &'static str, url: &str) -> String {
    browse(browser, url, &["--dump-dom".to_string()]).await
}
