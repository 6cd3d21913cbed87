//! Start-up time for the bench: polls `https://localhost:PORT/readyz` every millisecond (TLS verified against the
//! dev CA) until it answers 200, then prints the milliseconds since `START_NS` (the wall clock, in nanoseconds,
//! that the bench script read just before starting the server).
//!
//! `cargo run --release --example ready -- PORT CA_FILE START_NS`

use std::{
    io::{Read, Write},
    net::TcpStream,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName};

fn ready(port: u16, tls: &Arc<ClientConfig>) -> bool {
    let Ok(tcp) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_millis(500)));
    let name = ServerName::try_from("localhost").expect("a valid name");
    let Ok(conn) = ClientConnection::new(tls.clone(), name) else {
        return false;
    };
    let mut stream = StreamOwned::new(conn, tcp);
    let request = "GET /readyz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [port, ca, start_ns] = args.as_slice() else {
        panic!("usage: ready PORT CA_FILE START_NS");
    };
    let port: u16 = port.parse().expect("PORT is a number");
    let start_ns: u128 = start_ns.parse().expect("START_NS is a number");
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("readable CA") {
        roots.add(cert.expect("PEM CA")).expect("a usable CA");
    }
    let tls = Arc::new(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready(port, &tls) {
        assert!(Instant::now() < deadline, "not ready after 10 s");
        std::thread::sleep(Duration::from_millis(1));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos();
    println!("{:.1}", (now - start_ns) as f64 / 1e6);
}
