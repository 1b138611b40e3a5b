//! Fuzzes the interest-list entry parser: any text read from Redis must be
//! refused with an error or parsed into a declaration whose worker id is
//! the entry's first field. Never a panic.
#![no_main]

use anocast_wire::Declaration;
use anocast_wire::declaration::worker_id;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(entry) = std::str::from_utf8(bytes) else { return };
    if let Ok(declaration) = Declaration::parse(entry) {
        assert_eq!(declaration.worker.id(), worker_id(entry));
        let _ = declaration.verify("fuzz.topic", "fuzz-request", &[0; 32]);
    }
});
