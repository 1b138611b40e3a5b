//! `echo-13`: one more trivial worker, for fan-out to sixteen.
anocast_test_guests::echo_worker!("echo-13", ["bench.sixteen"]);
