//! Compiles proto/mls_client.proto without a system `protoc`: protox
//! (a pure-Rust protobuf compiler) produces the FileDescriptorSet that
//! tonic-prost-build turns into the message types, the server and the
//! client. It also writes the list of the service's methods, so the tests
//! can check that every RPC was exercised.

use std::fmt::Write as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/mls_client.proto");
    let fds = protox::compile(["mls_client.proto"], ["proto"])?;
    let mut methods = String::from(
        "/// The methods of `mls_client.MLSClient`, in proto order.\npub const METHODS: &[&str] = &[\n",
    );
    for file in &fds.file {
        for service in &file.service {
            for method in &service.method {
                writeln!(methods, "    {:?},", method.name())?;
            }
        }
    }
    methods.push_str("];\n");
    let out = std::env::var("OUT_DIR")?;
    std::fs::write(
        std::path::Path::new(&out).join("mls_client_methods.rs"),
        methods,
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
