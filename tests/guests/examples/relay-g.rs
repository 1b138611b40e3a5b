//! `relay-g`: a nested-dispatch relay on `chain.g` (see `relay`).
anocast_test_guests::relay_worker!("relay-g", "chain.g");
