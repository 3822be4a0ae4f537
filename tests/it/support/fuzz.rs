//! The fuzz runner shared by `tests/fuzz_*.rs`: replays a target's corpus, then feeds it
//! structure-aware, mutated-corpus and raw-byte inputs until a time budget runs out, catching
//! panics, shrinking each failure and keeping every distinct one for the final report.
//!
//! Budget: `BATON_FUZZ_SECS` (default 2 s a target, so `cargo test` stays fast; that short form uses
//! a fixed seed unless `BATON_FUZZ_SEED` says otherwise). Findings are written
//! to `target/fuzz-findings/<target>/`; a fixed one goes into `fuzz/corpus/<target>/` by hand.

#![allow(dead_code)] // each test crate uses a different part

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What a target says of one input: `Err` is a broken property, worded `"<kind>: <details>"` so
/// that failures of one kind count once.
pub type Verdict = Result<(), String>;

/// How long the mutation phase runs.
pub fn budget() -> Duration {
    let secs = std::env::var("BATON_FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(2.0);
    Duration::from_secs_f64(secs)
}

pub fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files of `fuzz/corpus/<target>/`, sorted by name.
pub fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    read_files(&crate_root().join("fuzz/corpus").join(target))
}

/// The files of a directory (not recursive), sorted by name.
pub fn read_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().map(|bytes| (p, bytes)))
        .collect()
}

/// Counts of what the cases exercised (`count("oracle applied")`), printed with the summary.
static TALLY: std::sync::Mutex<BTreeMap<&'static str, u64>> =
    std::sync::Mutex::new(BTreeMap::new());

/// Counts one case that reached `what`.
pub fn count(what: &'static str) {
    *TALLY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(what)
        .or_default() += 1;
}

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
    static GUARDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A panic hook that, inside `guarded`, records `location: message` for the runner instead of
/// printing it; elsewhere (the runner's own final report) it prints as usual.
fn install_quiet_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(std::cell::Cell::get) {
                default(info);
                return;
            }
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(non-string panic)".into());
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("panic at {location}: {message}")));
        }));
    });
}

/// Runs `check` with panics turned into `Err("panic at <file:line>: <message>")`.
fn guarded(check: &dyn Fn(&[u8]) -> Verdict, input: &[u8]) -> Verdict {
    GUARDED.with(|g| g.set(true));
    let outcome = catch_unwind(AssertUnwindSafe(|| check(input)));
    GUARDED.with(|g| g.set(false));
    match outcome {
        Ok(verdict) => verdict,
        Err(_) => Err(LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| "panic at ?: (no message)".into())),
    }
}

/// The part of a failure that names its kind: the panic location, or the property's label.
fn failure_kind(failure: &str) -> String {
    match failure.strip_prefix("panic at ") {
        Some(rest) => format!("panic at {}", rest.split(": ").next().unwrap_or(rest)),
        None => failure.split(':').next().unwrap_or(failure).to_string(),
    }
}

fn short_hash(bytes: &[u8]) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

fn save_finding(target: &str, input: &[u8]) -> PathBuf {
    let dir = crate_root().join("target/fuzz-findings").join(target);
    let path = dir.join(short_hash(input));
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(&path, input);
    path
}

/// One mutation of a byte string. Positions are taken modulo the length when applied.
#[derive(Debug, Clone)]
pub enum Mutation {
    FlipBit(usize, u8),
    Insert(usize, Vec<u8>),
    InsertToken(usize, usize),
    Delete(usize, usize),
    SpliceFrom(usize, usize, usize, usize),
    DuplicateLine(usize),
    DeleteLine(usize),
    SwapLines(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(i, t)| Mutation::InsertToken(i, t)),
        1 => (any::<usize>(), 1usize..24).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => (any::<usize>(), any::<usize>(), any::<usize>(), 1usize..64)
            .prop_map(|(i, s, f, n)| Mutation::SpliceFrom(i, s, f, n)),
        1 => any::<usize>().prop_map(Mutation::DuplicateLine),
        1 => any::<usize>().prop_map(Mutation::DeleteLine),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
    ]
}

fn line_ranges(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = 0;
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\n' {
            ranges.push(start..i + 1);
            start = i + 1;
        }
    }
    if start < bytes.len() {
        ranges.push(start..bytes.len());
    }
    ranges
}

/// Applies `m` to `bytes`; `seeds` feed splices, `dictionary` feeds token inserts.
pub fn apply(bytes: &mut Vec<u8>, m: &Mutation, seeds: &[Vec<u8>], dictionary: &[&str]) {
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
    match m {
        Mutation::FlipBit(i, bit) if !bytes.is_empty() => {
            let i = i % bytes.len();
            bytes[i] ^= 1 << bit;
        }
        Mutation::FlipBit(..) => {}
        Mutation::Insert(i, b) => {
            let i = at(*i, bytes.len());
            bytes.splice(i..i, b.iter().copied());
        }
        Mutation::InsertToken(i, t) if !dictionary.is_empty() => {
            let i = at(*i, bytes.len());
            let token = dictionary[t % dictionary.len()].as_bytes();
            bytes.splice(i..i, token.iter().copied());
        }
        Mutation::InsertToken(..) => {}
        Mutation::Delete(i, n) => {
            let i = at(*i, bytes.len());
            let end = (i + n).min(bytes.len());
            bytes.drain(i..end);
        }
        Mutation::SpliceFrom(i, seed, from, n) if !seeds.is_empty() => {
            let other = &seeds[seed % seeds.len()];
            let from = at(*from, other.len()).min(other.len());
            let part = &other[from..(from + n).min(other.len())];
            let i = at(*i, bytes.len());
            bytes.splice(i..i, part.iter().copied());
        }
        Mutation::SpliceFrom(..) => {}
        Mutation::DuplicateLine(i) | Mutation::DeleteLine(i) => {
            let lines = line_ranges(bytes);
            if lines.is_empty() {
                return;
            }
            let line = lines[i % lines.len()].clone();
            if matches!(m, Mutation::DuplicateLine(_)) {
                let copy = bytes[line.clone()].to_vec();
                bytes.splice(line.start..line.start, copy);
            } else {
                bytes.drain(line);
            }
        }
        Mutation::SwapLines(a, b) => {
            let lines = line_ranges(bytes);
            if lines.len() < 2 {
                return;
            }
            let (a, b) = (a % lines.len(), b % lines.len());
            let (first, second) = (lines[a.min(b)].clone(), lines[a.max(b)].clone());
            if first == second {
                return;
            }
            let mut out = bytes[..first.start].to_vec();
            out.extend_from_slice(&bytes[second.clone()]);
            out.extend_from_slice(&bytes[first.end..second.start]);
            out.extend_from_slice(&bytes[first.clone()]);
            out.extend_from_slice(&bytes[second.end..]);
            *bytes = out;
        }
    }
}

/// A seed with 1 to 6 mutations applied.
pub fn mutated(
    seeds: Vec<Vec<u8>>,
    dictionary: &'static [&'static str],
) -> impl Strategy<Value = Vec<u8>> {
    let count = seeds.len().max(1);
    (0..count, prop::collection::vec(mutation(), 1..7)).prop_map(move |(pick, mutations)| {
        let mut bytes = seeds.get(pick).cloned().unwrap_or_default();
        for m in &mutations {
            apply(&mut bytes, m, &seeds, dictionary);
        }
        bytes
    })
}

/// A case slower than this is reported (and saved) as slow.
const SLOW_CASE: Duration = Duration::from_secs(2);

/// A fuzz target: its corpus name, the inputs it starts from and its property.
pub struct Target<'a> {
    pub name: &'a str,
    /// Extra seeds beside the corpus (for example `tests/data` files), mutated but not replayed.
    pub seeds: Vec<Vec<u8>>,
    /// Tokens worth inserting (keywords, punctuation of the format).
    pub dictionary: &'static [&'static str],
    pub check: &'a dyn Fn(&[u8]) -> Verdict,
}

/// Replays the corpus, then fuzzes for `budget()` with `structured` inputs, mutated seeds and raw
/// bytes. Panics at the end with every distinct failure (shrunk, saved under `target/`).
pub fn run(target: Target<'_>, structured: BoxedStrategy<Vec<u8>>) {
    install_quiet_hook();
    let mut failures: BTreeMap<String, (String, PathBuf)> = BTreeMap::new();
    let corpus = corpus(target.name);
    for (path, bytes) in &corpus {
        if let Err(failure) = guarded(target.check, bytes) {
            failures
                .entry(failure_kind(&failure))
                .or_insert((failure, path.clone()));
        }
    }
    let mut seeds: Vec<Vec<u8>> = corpus.into_iter().map(|(_, b)| b).collect();
    seeds.extend(target.seeds.iter().cloned());
    let replayed = seeds.len() - target.seeds.len();

    let inputs = prop_oneof![
        3 => structured,
        4 => mutated(seeds, target.dictionary),
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ];
    let seed = seed();
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let started = Instant::now();
    let deadline = started + budget();
    let mut cases: u64 = 0;
    while Instant::now() < deadline {
        let Ok(mut tree) = inputs.new_tree(&mut runner) else {
            continue;
        };
        cases += 1;
        let input = tree.current();
        let case_started = Instant::now();
        let verdict = guarded(target.check, &input);
        let took = case_started.elapsed();
        if took > SLOW_CASE {
            // Not a failure (the machine may just be busy), but worth a look: saved and printed.
            let path = save_finding(&format!("{}-slow", target.name), &input);
            eprintln!(
                "fuzz {}: SLOW case, {:.1} s: {}",
                target.name,
                took.as_secs_f64(),
                path.display()
            );
        }
        let Err(failure) = verdict else {
            continue;
        };
        let kind = failure_kind(&failure);
        if failures.contains_key(&kind) {
            continue;
        }
        let (minimal, failure) = shrink(&mut tree, target.check, &kind, failure);
        let path = save_finding(target.name, &minimal);
        eprintln!(
            "fuzz {}: FOUND {failure}\n  input saved to {}",
            target.name,
            path.display()
        );
        failures.insert(kind, (failure, path));
    }
    eprintln!(
        "fuzz {}: replayed {replayed} corpus files, ran {cases} cases in {:.1} s (seed {seed}), {} distinct failures",
        target.name,
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    for (what, n) in TALLY.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        eprintln!("fuzz {}:   {n} {what}", target.name);
    }
    if !failures.is_empty() {
        let listing: Vec<String> = failures
            .values()
            .map(|(failure, path)| format!("{failure}\n    input: {}", path.display()))
            .collect();
        panic!(
            "fuzz {}: {} failure(s):\n{}",
            target.name,
            failures.len(),
            listing.join("\n")
        );
    }
}

/// `BATON_FUZZ_SEED`; else a fixed seed for the short form in `cargo test` (so CI explores the
/// same inputs each run and a failure there reproduces), a fresh one for a long run.
fn seed() -> u64 {
    if let Some(seed) = std::env::var("BATON_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        return seed;
    }
    if std::env::var_os("BATON_FUZZ_SECS").is_none() {
        return 20_261_128;
    }
    std::time::SystemTime::UNIX_EPOCH
        .elapsed()
        .map_or(0, |d| d.as_nanos() as u64)
}

/// proptest's shrink loop, keeping only simplifications that fail the same way; bounded in steps.
fn shrink(
    tree: &mut impl ValueTree<Value = Vec<u8>>,
    check: &dyn Fn(&[u8]) -> Verdict,
    kind: &str,
    failure: String,
) -> (Vec<u8>, String) {
    let mut best = (tree.current(), failure);
    let mut steps = 0;
    if !tree.simplify() {
        return best;
    }
    while steps < 4096 {
        steps += 1;
        let candidate = tree.current();
        match guarded(check, &candidate) {
            Err(f) if failure_kind(&f) == kind => {
                best = (candidate, f);
                if !tree.simplify() {
                    break;
                }
            }
            _ => {
                if !tree.complicate() {
                    break;
                }
            }
        }
    }
    best
}
