//! `swap` 1.0.0: the first version of the plugin the hot-reload tests swap.
anocast_test_guests::versioned_worker!("swap", "1.0.0", ["swap"]);
