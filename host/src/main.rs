//! The `anocast` binary. Everything lives in the library: see [`anocast::cli`].

/// mimalloc rather than the system allocator: a dispatch allocates and
/// frees many small buffers on several threads, where glibc's malloc cost
/// about 15% of a node's CPU under load (`cargo xtask bench`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    anocast::cli::main()
}
