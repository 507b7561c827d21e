//! Compiles `proto/tributary/v1/*.proto` into Rust at build time.
//!
//! No system `protoc`: `protox` (a pure-Rust protobuf compiler) parses the
//! files into a `FileDescriptorSet`, and `tonic-prost-build` generates the
//! prost messages and the tonic client and server from it. The output lands
//! in `OUT_DIR/tributary.v1.rs`, included by `src/lib.rs`.

use std::error::Error;

/// The protocol files, relative to the include root [`INCLUDE`].
const FILES: [&str; 2] = ["tributary/v1/peer.proto", "tributary/v1/admin.proto"];

/// The include root: imports are written relative to it.
const INCLUDE: &str = "proto";

fn main() -> Result<(), Box<dyn Error>> {
    for file in FILES {
        println!("cargo:rerun-if-changed={INCLUDE}/{file}");
    }
    // `protox::Error` renders the file, line and column of a syntax error.
    let descriptors = protox::compile(FILES, [INCLUDE])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
