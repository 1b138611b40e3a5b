//! `cold`: the same counter as `warm`, not declared stateless: every task
//! must find a fresh instance (the count is always 1).
anocast_test_guests::counter_worker!("cold");
