//! `bad-describe`: a component that describes itself with an invalid topic
//! pattern; the host must refuse to load it.
anocast_test_guests::echo_worker!("bad-describe", ["orders..created"]);
