//! `relay-h`: a nested-dispatch relay on `chain.h` (see `relay`).
anocast_test_guests::relay_worker!("relay-h", "chain.h");
