//! Generates tidald's gRPC code from proto/ (needs `protoc`, installed by hack/setup).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // The serving shim's cold code after its hot code: see src/bin/cold.ld.
    println!("cargo:rerun-if-changed=src/bin/cold.ld");
    let dir = std::env::var("CARGO_MANIFEST_DIR")?;
    println!("cargo:rustc-link-arg-bin=containerd-shim-tidal-v2=-Wl,-T,{dir}/src/bin/cold.ld");
    tonic_prost_build::configure().compile_protos(
        &[
            "proto/tidal/resize/v1/resize.proto",
            "proto/tidal/traits/v1/traits.proto",
            "proto/tidal/policy/v1/policy.proto",
        ],
        &["proto"],
    )?;
    Ok(())
}
