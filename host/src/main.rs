//! The `anocast` binary. Everything lives in the library: see [`anocast::cli`].

fn main() -> std::process::ExitCode {
    anocast::cli::main()
}
