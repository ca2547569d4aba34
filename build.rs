//! Generates tidald's gRPC code from proto/ (needs `protoc`, installed by hack/setup).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure().compile_protos(
        &[
            "proto/tidal/resize/v1/resize.proto",
            "proto/tidal/traits/v1/traits.proto",
        ],
        &["proto"],
    )?;
    Ok(())
}
