//! `echo-8`: one more trivial worker, for fan-out to sixteen.
anocast_test_guests::echo_worker!("echo-8", ["bench.sixteen"]);
