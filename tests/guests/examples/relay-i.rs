//! `relay-i`: a nested-dispatch relay on `chain.i` (see `relay`).
anocast_test_guests::relay_worker!("relay-i", "chain.i");
