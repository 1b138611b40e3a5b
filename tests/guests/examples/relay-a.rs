//! `relay-a`: a nested-dispatch relay on `chain.a` (see `relay`).
anocast_test_guests::relay_worker!("relay-a", "chain.a");
