//! Not a test: `cargo test -p skiff-apiserver --test debug_serve -- --ignored` keeps a server
//! running for manual poking (prints the kubeconfig path).

mod common;

#[test]
#[ignore]
fn serve_for_a_while() {
    let server = common::TestServer::start();
    println!("KUBECONFIG={}", server.kubeconfig.display());
    std::fs::write(
        "/tmp/skiff-debug-kubeconfig",
        server.kubeconfig.display().to_string(),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(600));
}
