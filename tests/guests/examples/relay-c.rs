//! `relay-c`: a nested-dispatch relay on `chain.c` (see `relay`).
anocast_test_guests::relay_worker!("relay-c", "chain.c");
