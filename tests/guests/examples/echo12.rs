//! `echo-12`: one more trivial worker, for fan-out to sixteen.
anocast_test_guests::echo_worker!("echo-12", ["bench.sixteen"]);
