//! `echo-warm`: the benchmarks' echo, declared stateless, so that its tasks
//! run in warm instances (what a plugin that keeps nothing between tasks
//! should declare).
anocast_test_guests::echo_worker!("echo-warm", ["bench.warm"], stateless);
