//! `swap` 2.0.0: the second version of the plugin the hot-reload tests swap.
anocast_test_guests::versioned_worker!("swap", "2.0.0", ["swap"]);
