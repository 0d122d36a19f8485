//! Compiles `proto/` with protox (a protobuf compiler in pure Rust), so building Chattr
//! never needs a system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files =
        ["proto/chattr/v1/auth.proto", "proto/chattr/v1/messaging.proto", "proto/chattr/v1/video.proto"];
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
