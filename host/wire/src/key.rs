//! Node keys. Every node signs with an ed25519 key of its own; dispatchers
//! know the public keys they trust. A public key is written as text
//! `ed25519:` followed by its 32 bytes in lowercase hex; a private key is
//! kept as a PKCS#8 PEM file.
//!
//! Verification is strict: a public key must be a canonical encoding of a
//! point that is not of small order, and a signature's `R` must be a
//! canonical encoding of a point that is not of small order and its `s` a
//! canonical scalar.
//!
//! Curve arithmetic is most of a reply's cost, so none is done twice: a
//! public key that passed its checks is remembered (a key's validity
//! depends on its bytes alone, and a mesh has few keys), and a
//! signature's `R` is checked on its bytes (canonical, not one of the eight
//! points of small order) instead of by decompressing it, before a single
//! or a batch verification alike, so that both accept exactly the same
//! signatures.
//!
//! Signing uses aws-lc-rs, whose assembly for the fixed-base scalar
//! multiplication is the fastest signer measured (docs/distributed.md has
//! the numbers). ed25519
//! signatures are deterministic, so both give the same bytes (a test checks
//! it). ed25519-dalek keeps the key formats and verification, where its
//! batch verification is the fastest available.

use std::collections::HashMap;
use std::fmt;
use std::sync::{LazyLock, Mutex};

use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};

use crate::WireError;

/// The text prefix of a public key.
pub const PREFIX: &str = "ed25519:";

/// A node's signing key. Its `Debug` shows only the public half.
pub struct NodeKey {
    /// The key, for its formats and public half.
    key: SigningKey,
    /// The same key, for signing.
    signer: aws_lc_rs::signature::Ed25519KeyPair,
}

impl NodeKey {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Result<Self, WireError> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| WireError::new(format!("no randomness for a new key: {e}")))?;
        Self::from_seed(&seed)
    }

    /// The key with this 32-byte seed (RFC 8032's private key).
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, WireError> {
        Self::from_signing_key(SigningKey::from_bytes(seed))
    }

    /// Reads a PKCS#8 PEM private key.
    pub fn from_pem(text: &str) -> Result<Self, WireError> {
        let key = SigningKey::from_pkcs8_pem(text)
            .map_err(|e| WireError::new(format!("not an ed25519 PKCS#8 PEM private key: {e}")))?;
        Self::from_signing_key(key)
    }

    fn from_signing_key(key: SigningKey) -> Result<Self, WireError> {
        let signer = aws_lc_rs::signature::Ed25519KeyPair::from_seed_and_public_key(
            key.as_bytes(),
            key.verifying_key().as_bytes(),
        )
        .map_err(|e| WireError::new(format!("the signer refused the key: {e}")))?;
        Ok(NodeKey { key, signer })
    }

    /// The key as PKCS#8 v1 PEM text (RFC 8410: the seed alone, no public
    /// key), the form OpenSSL, Python's `cryptography` and Go read. Reading
    /// takes v1 and v2 (with the public key) alike.
    pub fn to_pem(&self) -> Result<String, WireError> {
        ed25519_dalek::pkcs8::KeypairBytes { secret_key: self.key.to_bytes(), public_key: None }
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.to_string())
            .map_err(|e| WireError::new(format!("cannot encode the key: {e}")))
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.key.verifying_key())
    }

    /// Signs `message`. Fails only if the signer cannot allocate.
    pub fn sign(&self, message: &[u8]) -> Result<[u8; 64], WireError> {
        let signature = self.signer.try_sign(message).map_err(|_| WireError::new("signing failed"))?;
        <[u8; 64]>::try_from(signature.as_ref())
            .map_err(|_| WireError::new("the signer gave a signature of a wrong size"))
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKey({})", self.public())
    }
}

/// A node's public key, checked to be canonical and not weak.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Reads 32 bytes strictly.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, WireError> {
        if let Some(key) = KNOWN_KEYS.lock().ok().and_then(|known| known.get(bytes).copied()) {
            return Ok(PublicKey(key));
        }
        let point = canonical_point(bytes).ok_or_else(|| WireError::new("public key is not a canonical point"))?;
        if point.is_small_order() {
            return Err(WireError::new("weak public key (small order)"));
        }
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| WireError::new("invalid public key"))?;
        if let Ok(mut known) = KNOWN_KEYS.lock() {
            // Bounded: keys sent to fill it only push the others out.
            if known.len() >= KNOWN_KEYS_MAX {
                known.clear();
            }
            known.insert(*bytes, key);
        }
        Ok(PublicKey(key))
    }

    /// Reads `ed25519:<64 hex digits>`.
    pub fn parse(text: &str) -> Result<Self, WireError> {
        let hex_part =
            text.strip_prefix(PREFIX).ok_or_else(|| WireError::new(format!("a public key starts with {PREFIX:?}")))?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut bytes)
            .map_err(|_| WireError::new("a public key is ed25519: and 64 hex digits"))?;
        Self::from_bytes(&bytes)
    }

    /// The 32 bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Verifies `signature` over `message` strictly.
    ///
    /// The encoding checks are [`check_signature`]'s, on bytes, as for a
    /// batch; the key was checked when it was read. What is left is the
    /// equation, which recomputes `R` and compares its canonical encoding
    /// with the signature's. ed25519-dalek's `verify_strict` would refuse
    /// the same signatures, but decompresses `R` to do so, a sixth of a
    /// verification.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> Result<(), WireError> {
        check_signature(signature)?;
        ed25519_dalek::Verifier::verify(&self.0, message, &Signature::from_bytes(signature))
            .map_err(|_| WireError::new("bad signature"))
    }

    pub(crate) fn verifying_key(&self) -> VerifyingKey {
        self.0
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", hex::encode(self.0.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Public keys that passed [`PublicKey::from_bytes`]'s checks.
static KNOWN_KEYS: LazyLock<Mutex<HashMap<[u8; 32], VerifyingKey>>> = LazyLock::new(Mutex::default);

/// Most keys remembered at once.
const KNOWN_KEYS_MAX: usize = 4096;

/// The point `bytes` encode, if they are its canonical encoding.
fn canonical_point(bytes: &[u8; 32]) -> Option<curve25519_dalek::EdwardsPoint> {
    let point = CompressedEdwardsY(*bytes).decompress()?;
    (point.compress().as_bytes() == bytes).then_some(point)
}

/// Checks a signature's encoding before a batch verification: `R`
/// canonical and not of small order, `s` canonical. This looks at bytes
/// only: an `R` that passes and is no point at all fails the batch, whose
/// signatures are then verified one by one. The single path
/// ([`PublicKey::verify`]) refuses exactly what this refuses.
pub(crate) fn check_signature(signature: &[u8; 64]) -> Result<(), WireError> {
    let mut r = [0u8; 32];
    r.copy_from_slice(&signature[..32]);
    check_r(&r)?;
    check_s(signature)
}

/// The canonical encodings of the eight points of small order.
static SMALL_ORDER: LazyLock<[[u8; 32]; 8]> =
    LazyLock::new(|| curve25519_dalek::constants::EIGHT_TORSION.map(|point| point.compress().to_bytes()));

/// Refuses an `R` whose encoding is not canonical or whose point is of small
/// order, from its bytes: `y` (the low 255 bits) must be below the field
/// prime p = 2^255 - 19, and the sign bit of `x` must be clear when x = 0,
/// which happens for y = 1 and y = p - 1 only (both of small order).
fn check_r(r: &[u8; 32]) -> Result<(), WireError> {
    let mut y = *r;
    y[31] &= 0x7f;
    // p - 1 and the values from p up share their top 247 bits with p.
    let near_p = y[31] == 0x7f && y[1..31].iter().all(|&b| b == 0xff);
    let y_at_least_p = near_p && y[0] >= 0xed;
    let y_is_p_minus_one = near_p && y[0] == 0xec;
    let y_is_one = y[0] == 1 && y[1..].iter().all(|&b| b == 0);
    if y_at_least_p || (r[31] & 0x80 != 0 && (y_is_one || y_is_p_minus_one)) {
        return Err(WireError::new("non-canonical signature (R)"));
    }
    if SMALL_ORDER.contains(r) {
        return Err(WireError::new("weak signature (R of small order)"));
    }
    Ok(())
}

/// Checks that a signature's `s` is a canonical scalar (no curve arithmetic).
fn check_s(signature: &[u8; 64]) -> Result<(), WireError> {
    let mut s = [0u8; 32];
    s.copy_from_slice(&signature[32..]);
    if bool::from(Scalar::from_canonical_bytes(s).is_none()) {
        return Err(WireError::new("non-canonical signature (s)"));
    }
    Ok(())
}

/// Verifies several signatures at once (faster than one by one when more
/// than a couple are pending). `Ok` means all are valid; on `Err`, verify
/// them one by one to find the bad ones.
pub fn verify_batch(items: &[(&PublicKey, &[u8], &[u8; 64])]) -> Result<(), WireError> {
    for (_, _, signature) in items {
        check_signature(signature)?;
    }
    let messages: Vec<&[u8]> = items.iter().map(|(_, m, _)| *m).collect();
    let signatures: Vec<Signature> = items.iter().map(|(_, _, s)| Signature::from_bytes(s)).collect();
    let keys: Vec<VerifyingKey> = items.iter().map(|(k, _, _)| k.verifying_key()).collect();
    ed25519_dalek::verify_batch(&messages, &signatures, &keys).map_err(|_| WireError::new("bad signature in batch"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_as_text_and_pem() -> Result<(), WireError> {
        let key = NodeKey::generate()?;
        let public = key.public();
        assert_eq!(PublicKey::parse(&public.to_string())?, public);
        let pem = key.to_pem()?;
        // PKCS#8 v1 of an ed25519 seed: 48 bytes of DER, version 0.
        let der = pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>();
        assert!(der.starts_with("MC4CAQAwBQYDK2Vw"), "not PKCS#8 v1: {pem}");
        let again = NodeKey::from_pem(&pem)?;
        assert_eq!(again.public(), public);
        Ok(())
    }

    #[test]
    fn signatures_are_rfc_8032_s_whatever_signs() -> Result<(), WireError> {
        // RFC 8032, section 7.1, test 2: a one-byte message.
        let mut seed = [0u8; 32];
        hex::decode_to_slice("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb", &mut seed)
            .map_err(|e| WireError::new(e.to_string()))?;
        let key = NodeKey::from_seed(&seed)?;
        let expected = "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da\
                        085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00";
        assert_eq!(hex::encode(key.sign(&[0x72])?), expected);
        // And the same bytes as ed25519-dalek's signer, for many keys and
        // message lengths.
        for i in 0..64u8 {
            let key = NodeKey::from_seed(&[i; 32])?;
            let message: Vec<u8> = (0..u16::from(i) * 37).map(|b| b as u8 ^ i).collect();
            assert_eq!(key.sign(&message)?, ed25519_dalek::Signer::sign(&key.key, &message).to_bytes());
            key.public().verify(&message, &key.sign(&message)?)?;
        }
        Ok(())
    }

    #[test]
    fn weak_and_non_canonical_keys_are_refused() {
        // The identity point (small order).
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(matches!(PublicKey::from_bytes(&identity), Err(e) if e.0.contains("weak")));
        // Why: with the identity as key, the signature (R = the identity,
        // s = 0) satisfies the verification equation for every message, and
        // lax verification accepts it.
        let lax = VerifyingKey::from_bytes(&identity).expect("a lax decoder takes the point");
        let mut forged = [0u8; 64];
        forged[0] = 1;
        assert!(ed25519_dalek::Verifier::verify(&lax, b"any message", &Signature::from_bytes(&forged)).is_ok());
        // y = p + 1 (a non-canonical encoding of the identity's y).
        let mut non_canonical = [0xff; 32];
        non_canonical[0] = 0xee;
        non_canonical[31] = 0x7f;
        assert!(PublicKey::from_bytes(&non_canonical).is_err());
        assert!(PublicKey::parse("ed25519:00").is_err());
        assert!(PublicKey::parse("rsa:00").is_err());
    }

    #[test]
    fn remembered_keys_are_checked_keys() -> Result<(), WireError> {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        // A refused key is not remembered: refused again.
        for _ in 0..2 {
            assert!(PublicKey::from_bytes(&identity).is_err());
        }
        let key = NodeKey::from_seed(&[9; 32])?.public();
        assert_eq!(PublicKey::from_bytes(&key.to_bytes())?, key);
        assert_eq!(PublicKey::from_bytes(&key.to_bytes())?, key);
        Ok(())
    }

    /// The curve-arithmetic reference for [`check_r`]: decompress, and
    /// compare the canonical encoding and the order.
    fn reference_check_r(r: &[u8; 32]) -> Option<bool> {
        let point = CompressedEdwardsY(*r).decompress()?;
        Some(point.compress().as_bytes() == r && !point.is_small_order())
    }

    #[test]
    fn the_bytes_only_r_check_agrees_with_curve_arithmetic_on_every_point() {
        let mut cases: Vec<[u8; 32]> = Vec::new();
        // Every y from p - 2 to 2^255 - 1, and small y, with either sign.
        for low in 0xea..=0xffu8 {
            let mut y = [0xff; 32];
            y[0] = low;
            y[31] = 0x7f;
            cases.push(y);
        }
        for small in 0..=20u8 {
            let mut y = [0u8; 32];
            y[0] = small;
            cases.push(y);
        }
        for t in curve25519_dalek::constants::EIGHT_TORSION {
            cases.push(t.compress().to_bytes());
        }
        // Points of large order, and random bytes.
        for i in 0..200u8 {
            cases.push(
                NodeKey::from_seed(&[i; 32]).and_then(|key| key.sign(b"m")).expect("a seed makes a key that signs")
                    [..32]
                    .try_into()
                    .expect("32 bytes"),
            );
            let mut random = [0u8; 32];
            for (j, b) in random.iter_mut().enumerate() {
                *b = (i as usize * 131 + j * 71 + (i as usize * j) % 251) as u8;
            }
            cases.push(random);
        }
        let with_signs: Vec<[u8; 32]> = cases
            .iter()
            .flat_map(|c| {
                let (mut plus, mut minus) = (*c, *c);
                plus[31] &= 0x7f;
                minus[31] |= 0x80;
                [plus, minus]
            })
            .collect();
        let mut points = 0;
        for r in with_signs {
            // Bytes that are no point are left to the batch to refuse.
            if let Some(accept) = reference_check_r(&r) {
                points += 1;
                assert_eq!(check_r(&r).is_ok(), accept, "R = {}", hex::encode(r));
            }
        }
        assert!(points > 200, "too few points among the cases: {points}");
    }

    #[test]
    fn single_and_batch_refuse_the_same_weak_or_non_canonical_r() -> Result<(), WireError> {
        let key = NodeKey::from_seed(&[7; 32])?;
        let good = key.sign(b"message")?;
        // R = the identity (small order), canonical and in the y = p + 1
        // form; R = y = 2 + p, a non-canonical encoding.
        let mut rs = Vec::new();
        let mut identity = [0u8; 32];
        identity[0] = 1;
        rs.push(identity);
        let mut p_plus_1 = [0xff; 32];
        p_plus_1[0] = 0xee;
        p_plus_1[31] = 0x7f;
        rs.push(p_plus_1);
        let mut p_plus_2 = p_plus_1;
        p_plus_2[0] = 0xef;
        rs.push(p_plus_2);
        for r in rs {
            let mut bad = good;
            bad[..32].copy_from_slice(&r);
            assert!(key.public().verify(b"message", &bad).is_err(), "single accepted R = {}", hex::encode(r));
            assert!(check_signature(&bad).is_err(), "batch pre-check accepted R = {}", hex::encode(r));
        }
        key.public().verify(b"message", &good)
    }

    #[test]
    fn an_r_of_small_order_is_refused_even_where_the_equation_holds() -> Result<(), WireError> {
        use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
        use sha2::{Digest, Sha512};
        // A key with a torsion component T (accepted: it is not of small
        // order) lets whoever holds it pick s so that [s]B - [k]A = -[k]T,
        // a point of small order; for about one R in eight that point is R
        // itself.
        let secret = Scalar::from(0x5eed_u64);
        let point = ED25519_BASEPOINT_POINT * secret + EIGHT_TORSION[1];
        let public = PublicKey::from_bytes(&point.compress().to_bytes())?;
        let mut found = 0;
        for i in 0u32..64 {
            let message = i.to_le_bytes();
            for r in EIGHT_TORSION.map(|t| t.compress().to_bytes()) {
                let hash: [u8; 64] = Sha512::new()
                    .chain_update(r)
                    .chain_update(public.to_bytes())
                    .chain_update(message)
                    .finalize()
                    .into();
                let k = Scalar::from_bytes_mod_order_wide(&hash);
                let s = k * secret;
                if (ED25519_BASEPOINT_POINT * s - point * k).compress().to_bytes() != r {
                    continue;
                }
                let mut signature = [0u8; 64];
                signature[..32].copy_from_slice(&r);
                signature[32..].copy_from_slice(s.as_bytes());
                // The cofactorless equation holds: only the check of R
                // stands between this signature and acceptance.
                assert!(
                    ed25519_dalek::Verifier::verify(&public.0, &message, &Signature::from_bytes(&signature)).is_ok()
                );
                assert!(public.0.verify_strict(&message, &Signature::from_bytes(&signature)).is_err());
                assert!(public.verify(&message, &signature).is_err(), "single accepted R = {}", hex::encode(r));
                assert!(
                    verify_batch(&[(&public, &message, &signature)]).is_err(),
                    "batch accepted R = {}",
                    hex::encode(r)
                );
                found += 1;
            }
        }
        assert!(found > 0, "no such signature was found to refuse");
        Ok(())
    }

    #[test]
    fn signatures_verify_strictly() -> Result<(), WireError> {
        let key = NodeKey::from_seed(&[7; 32])?;
        let signature = key.sign(b"message")?;
        key.public().verify(b"message", &signature)?;
        assert!(key.public().verify(b"massage", &signature).is_err());
        // s + l is the same signature in a non-canonical form.
        let mut malleated = signature;
        let s = Scalar::from_canonical_bytes(signature[32..].try_into().expect("32 bytes")).expect("canonical");
        // l, the group order, little-endian.
        let mut l_bytes = [0u8; 32];
        hex::decode_to_slice("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010", &mut l_bytes)
            .expect("hex");
        let mut carry = 0u16;
        for i in 0..32 {
            let sum = s.as_bytes()[i] as u16 + l_bytes[i] as u16 + carry;
            malleated[32 + i] = sum as u8;
            carry = sum >> 8;
        }
        assert!(matches!(key.public().verify(b"message", &malleated), Err(e) if e.0.contains("non-canonical")));
        verify_batch(&[(&key.public(), b"message", &signature), (&key.public(), b"message", &signature)])?;
        assert!(
            verify_batch(&[(&key.public(), b"message", &signature), (&key.public(), b"other", &signature)]).is_err()
        );
        Ok(())
    }
}
