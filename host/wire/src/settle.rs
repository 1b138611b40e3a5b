//! A settle decision, signed by the dispatcher of the root task (protocol
//! 2). A node applies the decision for a transaction only when it is
//! signed by the key that signed the root task its workers staged for: no
//! one else can commit or abort another's writes.
//!
//! The signed bytes: the 17 bytes `anocast-settle-v2`, the signer's key
//! (32), the transaction's request id (1-byte length + UTF-8) and the
//! decision (1 byte: 0 commit, 1 abort). The signature (64 bytes, ed25519)
//! travels in a header.

use crate::codec::Writer;
use crate::key::PublicKey;
use crate::names::check_request_id;
use crate::{NodeKey, WireError};

/// The domain of a decision's signature.
pub const TAG: &[u8; 17] = b"anocast-settle-v2";

/// The bytes a decision's signature covers; `commit` is the decision.
pub fn signed_bytes(key: &PublicKey, transaction: &str, commit: bool) -> Result<Vec<u8>, WireError> {
    check_request_id(transaction)?;
    let mut w = Writer::default();
    w.bytes(TAG).bytes(&key.to_bytes()).short(transaction).u8(if commit { 0 } else { 1 });
    Ok(w.0)
}

/// Signs a decision for `transaction` with `key`.
pub fn sign(key: &NodeKey, transaction: &str, commit: bool) -> Result<[u8; 64], WireError> {
    key.sign(&signed_bytes(&key.public(), transaction, commit)?)
}

/// Verifies that `key` signed this decision.
pub fn verify(key: &PublicKey, transaction: &str, commit: bool, signature: &[u8; 64]) -> Result<(), WireError> {
    key.verify(&signed_bytes(key, transaction, commit)?, signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decision_binds_its_transaction_and_what_was_decided() {
        let key = NodeKey::from_seed(&[3; 32]).expect("key");
        let other = NodeKey::from_seed(&[4; 32]).expect("key");
        let signature = sign(&key, "r-1", true).expect("signs");
        assert!(verify(&key.public(), "r-1", true, &signature).is_ok());
        assert!(verify(&key.public(), "r-1", false, &signature).is_err(), "a commit read as an abort");
        assert!(verify(&key.public(), "r-2", true, &signature).is_err(), "another transaction");
        assert!(verify(&other.public(), "r-1", true, &signature).is_err(), "another signer");
        assert!(sign(&key, "a,b", true).is_err(), "a bad request id");
    }
}
