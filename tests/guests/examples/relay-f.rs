//! `relay-f`: a nested-dispatch relay on `chain.f` (see `relay`).
anocast_test_guests::relay_worker!("relay-f", "chain.f");
