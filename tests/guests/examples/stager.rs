//! `stager`: stages writes for the compensation tests (see `stage`).
anocast_test_guests::stager_worker!("stager");
