//! The `anocast` binary: everything lives in the `anocast_cli` library.

/// mimalloc rather than the system allocator: a dispatch allocates and
/// frees many small buffers on several threads, where glibc's malloc was a
/// large share of a node's CPU under load (see docs/distributed.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    anocast_cli::main()
}
