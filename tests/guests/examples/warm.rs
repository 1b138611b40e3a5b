//! `warm`: declares itself stateless, yet counts the tasks its instance
//! served (`warm.count`), so that the tests see when an instance is reused;
//! `warm.trap` panics.
anocast_test_guests::counter_worker!("warm", stateless);
