//! `echo-11`: one more trivial worker, for fan-out to sixteen.
anocast_test_guests::echo_worker!("echo-11", ["bench.sixteen"]);
