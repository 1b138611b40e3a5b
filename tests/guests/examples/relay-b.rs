//! `relay-b`: a nested-dispatch relay on `chain.b` (see `relay`).
anocast_test_guests::relay_worker!("relay-b", "chain.b");
