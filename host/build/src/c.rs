//! C plugins: bindings from wit-bindgen's C generator (written into the
//! plugin's `bindings/`), compiled by clang for `wasm32-wasi` (preview 1,
//! Debian's wasi-libc) as a reactor, then made a component with the
//! preview-1 adapter.

use std::path::Path;
use std::process::Command;

use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
};
use wit_component::ComponentEncoder;

use crate::{BuildError, fail, on_path, run};

/// The Debian packages the C tool chain comes from.
pub const PACKAGES: [&str; 4] = ["clang", "lld", "wasi-libc", "libclang-rt-dev-wasm32"];

/// The folder, inside a C plugin's, where the generated bindings are
/// written (`worker.h`, `worker.c`, `worker_component_type.o`), for the
/// build and for the author's editor to read.
pub const BINDINGS_DIR: &str = "bindings";

/// Builds the `.c` files of `folder` (`plugin.c` and any other there, not in
/// sub-folders) with the generated bindings into the component `out`.
pub fn build(folder: &Path, wit: &Path, out: &Path) -> Result<(), BuildError> {
    let shown = folder.display();
    if !on_path("clang") {
        return fail(format!(
            "{shown} is a C plugin, built with clang for wasm32-wasi, which is not installed (Debian: apt-get install {})",
            PACKAGES.join(" ")
        ));
    }
    let bindings = folder.join(BINDINGS_DIR);
    write_bindings(wit, &bindings)
        .map_err(|e| BuildError(format!("{shown}: generating C bindings from {}: {e:#}", wit.display())))?;
    let mut sources: Vec<_> = std::fs::read_dir(folder)
        .map_err(|e| BuildError(format!("{shown}: {e}")))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    sources.sort();
    let work = tempfile::Builder::new()
        .prefix("anocast-c-")
        .tempdir()
        .map_err(|e| BuildError(format!("{shown}: creating a temporary folder: {e}")))?;
    let core = work.path().join("core.wasm");
    let mut cmd = Command::new("clang");
    // `-s`: Debian's libc.a carries DWARF, which would triple the size.
    cmd.args(["--target=wasm32-wasi", "-mexec-model=reactor", "-O2", "-s", "-Wall", "-I"])
        .arg(&bindings)
        .args(&sources)
        .arg(bindings.join("worker.c"))
        .arg(bindings.join("worker_component_type.o"))
        .arg("-o")
        .arg(&core);
    run(cmd, &format!("clang failed on {shown} (the tool chain is Debian's {})", PACKAGES.join(", ")))?;
    let module = std::fs::read(&core).map_err(|e| BuildError(format!("{shown}: {e}")))?;
    let component = ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .and_then(|encoder| {
            encoder.adapter(WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER)
        })
        .and_then(|mut encoder| encoder.encode())
        .map_err(|e| BuildError(format!("{shown}: making a component of clang's module: {e:#}")))?;
    std::fs::write(out, component).map_err(|e| BuildError(format!("writing {}: {e}", out.display())))
}

/// Writes `worker.h`, `worker.c` and `worker_component_type.o` for the
/// world `worker` of the package in `wit` into `dir`; a file whose content
/// is unchanged is not rewritten (so that watchers see no change).
fn write_bindings(wit: &Path, dir: &Path) -> anyhow::Result<()> {
    let mut resolve = wit_parser::Resolve::default();
    // Only the `.wit` files of `wit` itself (and a `deps/` folder) are read:
    // `wit/v0.1.0` is not.
    let (package, _) = resolve.push_dir(wit)?;
    let world = resolve.select_world(&[package], Some("worker"))?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default().build().generate(&resolve, world, &mut files)?;
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in files.iter() {
        let path = dir.join(name);
        if std::fs::read(&path).ok().as_deref() != Some(bytes) {
            std::fs::write(path, bytes)?;
        }
    }
    Ok(())
}
