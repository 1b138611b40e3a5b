//! `echo-4`: one more trivial worker, for fan-out to four.
anocast_test_guests::echo_worker!("echo-4", ["bench.four", "bench.sixteen"]);
