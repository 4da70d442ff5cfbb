//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and writes the
//! descriptor set that server reflection serves.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/peace/v1/tracker.proto"];
    let fds = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR not set")?);
    fs::write(out_dir.join("peace_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Smaller per-stream buffers for long-lived watch streams (src/grpc/codec.rs).
        .codec_path("crate::grpc::codec::LeanCodec")
        // Written by hand so a revision is encoded once for all watchers (src/grpc/wire.rs).
        .extern_path(".peace.v1.WatchEvent", "crate::grpc::wire::WatchEvent")
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
