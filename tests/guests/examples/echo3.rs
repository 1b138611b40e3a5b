//! `echo-3`: one more trivial worker, for fan-out to four.
anocast_test_guests::echo_worker!("echo-3", ["bench.four", "bench.sixteen"]);
