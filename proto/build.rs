//! Compiles the .proto files with protox (pure Rust, no `protoc` binary) and
//! generates tonic code; the encoded descriptor set is kept for reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/tongbao/v1/tongbao.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("tongbao_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
