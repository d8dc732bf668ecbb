//! Compiles the .proto files with protox (pure Rust, no `protoc` binary) and
//! generates tonic code; the encoded descriptor set is kept for reflection.
//! Every `.proto` of `proto/tongbao/v1` belongs to package `tongbao.v1`, one
//! file per area (exchange and log, administration, workflows).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::Path::new("proto/tongbao/v1");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut protos = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "proto") {
            println!("cargo:rerun-if-changed={}", path.display());
            protos.push(path);
        }
    }
    protos.sort();
    let fds = protox::compile(&protos, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("tongbao_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        // Undecodable requests are the sender's error, not the hub's.
        .codec_path("crate::codec::WireCodec")
        // Shared, not copied, when one stored entry is served to many.
        .bytes(".tongbao.v1.Delivery.encoded_entry")
        // Decoded without a copy from the buffer it arrived in.
        .bytes(".tongbao.v1.Message.body")
        .compile_fds(fds)?;
    Ok(())
}
