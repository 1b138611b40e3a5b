//! `relay-e`: a nested-dispatch relay on `chain.e` (see `relay`).
anocast_test_guests::relay_worker!("relay-e", "chain.e");
