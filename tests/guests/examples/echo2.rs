//! `echo-2`: one more trivial worker, for fan-out to four.
anocast_test_guests::echo_worker!("echo-2", ["bench.four", "bench.sixteen"]);
