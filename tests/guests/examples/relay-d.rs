//! `relay-d`: a nested-dispatch relay on `chain.d` (see `relay`).
anocast_test_guests::relay_worker!("relay-d", "chain.d");
