//! `echo`: the trivial worker of the benchmarks and the load tests.
anocast_test_guests::echo_worker!("echo", ["echo", "echo.>", "bench.one", "bench.four", "bench.sixteen", "race.>"]);
