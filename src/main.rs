//! The `baton` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    baton::cli::main()
}
