//! Fuzzes the reply envelope decoder: whatever arrives on a dispatcher's
//! inbox must be refused with an error or decoded into an envelope that
//! encodes back to exactly the bytes it was read from (so that the
//! signature covers everything the dispatcher acts on). Never a panic.
//!
//! An input that does not start with the 16-byte tag but whose first byte
//! is odd gets the tag in place of that byte: without sanitizers the
//! fuzzer cannot see inside the tag's comparison, and would otherwise spend
//! its time before it. `cargo xtask
//! test` seeds the corpus with `docs/protocol.md`'s vectors.
#![no_main]

use anocast_wire::Envelope;
use anocast_wire::envelope::{Sealed, TAG};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let bytes = match input.split_first() {
        Some((first, rest)) if first & 1 == 1 && !input.starts_with(TAG) => [&TAG[..], rest].concat(),
        _ => input.to_vec(),
    };
    if let Ok(sealed) = Sealed::decode(&bytes) {
        let again = sealed.envelope.unsigned().expect("a decoded envelope encodes");
        assert_eq!(again, sealed.signed, "decoding is not the inverse of encoding");
        assert_eq!(bytes.len(), sealed.signed.len() + 64);
    }
    // Verification must refuse without panicking too.
    let _ = Envelope::open(&bytes);
});
