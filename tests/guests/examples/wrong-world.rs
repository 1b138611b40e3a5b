//! `wrong-world`: a valid component that implements some other world.
#![allow(missing_docs)]

anocast_sdk::wit_bindgen::generate!({
    inline: "package test:other; world other { export run: func(); }",
    runtime_path: "anocast_sdk::wit_bindgen::rt",
});

struct Other;

impl Guest for Other {
    fn run() {}
}

export!(Other);
