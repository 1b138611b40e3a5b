//! `echo-9`: one more trivial worker, for fan-out to sixteen.
anocast_test_guests::echo_worker!("echo-9", ["bench.sixteen"]);
