//! The `anocast` command, built inside the tests package so that the CLI
//! tests can run it (`CARGO_BIN_EXE_*` names only a package's own binaries).
//! It calls the same entry point as `host/cli/src/main.rs`.

/// The allocator `host/cli/src/main.rs` uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    anocast_cli::main()
}
