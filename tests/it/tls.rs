//! TLS termination: ALPN, SNI, key formats, certificate rotation, bad input, upstream TLS.
//! Certificates are generated at test time (rcgen, and openssl for RSA/EC key formats).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl Pki {
    pub fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "weir test CA");
        Pki {
            ca: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.ca)
            .unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(weir::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

fn write_leaf(dir: &Path, name: &str, leaf: &Leaf) {
    std::fs::write(dir.join(format!("{name}.pem")), &leaf.cert_pem).unwrap();
    std::fs::write(dir.join(format!("{name}-key.pem")), &leaf.key_pem).unwrap();
}

/// A config whose listener `main` terminates TLS with certificates `a` (the default) and `b`.
fn tls_config(up: SocketAddr) -> String {
    split_config(up, up, 1, 0).replacen(
        "    address: 127.0.0.1:0\n",
        "    address: 127.0.0.1:0\n    tls:\n      certificates:\n        - { cert: a.pem, key: a-key.pem }\n        - { cert: b.pem, key: b-key.pem }\n",
        1,
    )
}

struct TlsWeir {
    pki: Pki,
    weir: Weir,
    a: Leaf,
    b: Leaf,
}

async fn tls_weir(up: SocketAddr) -> TlsWeir {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let a = pki.leaf(&["a.example.com", "127.0.0.1"]);
    let b = pki.leaf(&["b.example.com"]);
    write_leaf(dir.path(), "a", &a);
    write_leaf(dir.path(), "b", &b);
    let weir = weir_in(dir, &tls_config(up)).await;
    TlsWeir { pki, weir, a, b }
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn handshake(t: &TlsWeir, name: ServerName<'static>, alpn: &[&[u8]]) -> Tls {
    let tcp = TcpStream::connect(t.weir.address).await.unwrap();
    tokio_rustls::TlsConnector::from(t.pki.client_config(alpn))
        .connect(name, tcp)
        .await
        .expect("the handshake succeeds")
}

fn dns(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_owned()).unwrap()
}

/// Sends GET `path` on an established TLS connection, in HTTP/2 when ALPN chose h2.
async fn get_over(tls: Tls, path: &str) -> (Version, String) {
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(tls);
    let req = Request::get(path)
        .header("host", "a.example.com")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = req;
        *req.uri_mut() = format!("https://a.example.com{path}").parse().unwrap();
        send.send_request(req).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    };
    let version = resp.version();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (version, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn alpn_picks_http2_or_http1_and_requests_are_forwarded_as_https() {
    let up = upstream("u").await;
    let t = tls_weir(up.address).await;
    let h2 = handshake(&t, dns("a.example.com"), &[b"h2", b"http/1.1"]).await;
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (version, text) = get_over(h2, "/headers").await;
    assert_eq!(version, Version::HTTP_2);
    assert!(text.contains("x-forwarded-proto: https\n"), "{text}");

    let h1 = handshake(&t, dns("a.example.com"), &[b"http/1.1"]).await;
    assert_eq!(h1.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (version, text) = get_over(h1, "/").await;
    assert_eq!((version, text.as_str()), (Version::HTTP_11, "u"));
}

#[tokio::test]
async fn sni_picks_the_certificate_and_the_first_is_the_default() {
    let up = upstream("u").await;
    let t = tls_weir(up.address).await;
    let served = |tls: &Tls| tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let a = handshake(&t, dns("a.example.com"), &[]).await;
    assert_eq!(served(&a), t.a.der);
    let b = handshake(&t, dns("b.example.com"), &[]).await;
    assert_eq!(served(&b), t.b.der);
    // An IP address sends no SNI: the first certificate answers.
    let none = handshake(
        &t,
        ServerName::IpAddress("127.0.0.1".parse::<std::net::IpAddr>().unwrap().into()),
        &[],
    )
    .await;
    assert_eq!(served(&none), t.a.der);
}

#[tokio::test]
async fn curl_speaks_http2_and_http1_over_tls_through_weir() {
    let up = upstream("curl-ok").await;
    let t = tls_weir(up.address).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, t.pki.ca_pem()).unwrap();
    let port = t.weir.address.port();
    for (flag, want) in [("--http2", "2"), ("--http1.1", "1.1")] {
        // tokio's Command: a blocking wait would stall the runtime that serves weir.
        let out = tokio::process::Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                flag,
                "-w",
                " %{http_version}",
                "--cacert",
            ])
            .arg(&ca)
            .args(["--resolve", &format!("b.example.com:{port}:127.0.0.1")])
            .arg(format!("https://b.example.com:{port}/"))
            .output()
            .await
            .expect("curl is installed");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(text, format!("curl-ok {want}"));
    }
}

#[tokio::test]
async fn a_rotated_certificate_serves_new_connections_while_an_old_one_keeps_working() {
    let up = upstream("u").await;
    let t = tls_weir(up.address).await;
    let old = handshake(&t, dns("a.example.com"), &[b"h2"]).await;
    let io = TokioIo::new(old);
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);

    let dir = t.weir.path.parent().unwrap();
    let rotated = t.pki.leaf(&["a.example.com", "127.0.0.1"]);
    write_leaf(dir, "a", &rotated);
    let started = Instant::now();
    loop {
        let fresh = handshake(&t, dns("a.example.com"), &[]).await;
        if fresh.get_ref().1.peer_certificates().unwrap()[0] == rotated.der {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the new certificate was not served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection opened before the rotation still carries requests.
    let req = Request::get("https://a.example.com/")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_broken_certificate_on_reload_is_refused_and_the_old_one_serves() {
    let up = upstream("u").await;
    let t = tls_weir(up.address).await;
    let dir = t.weir.path.parent().unwrap();
    std::fs::write(dir.join("b.pem"), "not a certificate").unwrap();
    reload(&t.weir).await.unwrap_err();
    let c: Value =
        serde_json::from_slice(&get(&http1_client(), t.weir.admin, "/config").await.body).unwrap();
    let error = c["last_reload"]["error"].as_str().unwrap();
    assert!(
        error.contains("listeners[0].tls.certificates[1].cert"),
        "{error}"
    );
    assert!(error.contains("b.pem holds no PEM certificate"), "{error}");
    let b = handshake(&t, dns("b.example.com"), &[]).await;
    assert_eq!(b.get_ref().1.peer_certificates().unwrap()[0], t.b.der);
}

#[tokio::test]
async fn plaintext_and_silent_clients_are_closed_and_counted() {
    let up = upstream("u").await;
    let t = tls_weir(up.address).await;
    let mut plain = TcpStream::connect(t.weir.address).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "weir kept a plaintext connection open");
    assert!(!String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"));

    // A good handshake right after still works.
    let ok = handshake(&t, dns("a.example.com"), &[]).await;
    assert_eq!(get_over(ok, "/").await.1, "u");
    let metrics = get(&http1_client(), t.weir.admin, "/metrics").await;
    assert!(
        metrics
            .text()
            .contains("weir_tls_handshake_errors_total{listener=\"main\",reason=\"failed\"} 1"),
        "{}",
        metrics.text()
    );
}

#[tokio::test]
async fn a_client_that_never_finishes_the_handshake_times_out() {
    let up = upstream("u").await;
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    write_leaf(dir.path(), "a", &pki.leaf(&["a.example.com"]));
    write_leaf(dir.path(), "b", &pki.leaf(&["b.example.com"]));
    let w = weir_in(
        dir,
        &(tls_config(up.address) + "limits:\n  header_read_timeout: 300ms\n"),
    )
    .await;
    let mut silent = TcpStream::connect(w.address).await.unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "a silent client held its connection");
    let metrics = get(&http1_client(), w.admin, "/metrics").await;
    assert!(
        metrics.text().contains("reason=\"timeout\"} 1"),
        "{}",
        metrics.text()
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pkcs8_rsa_and_ec_keys_all_load() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let req = |key: &str, cert: &str, newkey: &[&str]| {
        let mut args = vec![
            "req",
            "-x509",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=k.example.com",
        ];
        args.extend_from_slice(newkey);
        args.extend_from_slice(&["-keyout", key, "-out", cert]);
        openssl(d, &args);
    };
    req("rsa8.pem", "rsa.pem", &["-newkey", "rsa:2048"]);
    openssl(
        d,
        &["rsa", "-in", "rsa8.pem", "-traditional", "-out", "rsa1.pem"],
    );
    req(
        "ec8.pem",
        "ec.pem",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    openssl(d, &["ec", "-in", "ec8.pem", "-out", "sec1.pem"]);
    for (cert, key, header) in [
        ("rsa.pem", "rsa8.pem", "BEGIN PRIVATE KEY"),
        ("rsa.pem", "rsa1.pem", "BEGIN RSA PRIVATE KEY"),
        ("ec.pem", "ec8.pem", "BEGIN PRIVATE KEY"),
        ("ec.pem", "sec1.pem", "BEGIN EC PRIVATE KEY"),
    ] {
        assert!(
            std::fs::read_to_string(d.join(key))
                .unwrap()
                .contains(header),
            "{key}"
        );
        if let Err(e) = weir::tls::certified_key(&d.join(cert), &d.join(key)) {
            panic!("{key}: {e}");
        }
    }
    let mismatch = weir::tls::certified_key(&d.join("rsa.pem"), &d.join("sec1.pem")).unwrap_err();
    assert!(mismatch.to_string().contains("does not fit"), "{mismatch}");
}

#[tokio::test]
async fn a_missing_certificate_at_start_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.yaml");
    std::fs::write(&path, tls_config("127.0.0.1:1".parse().unwrap())).unwrap();
    let Err(refused) = weir::reload::read_file(&path) else {
        panic!("accepted")
    };
    let text = refused.errors.to_string();
    assert!(
        text.contains("listeners[0].tls.certificates[0].cert: cannot read"),
        "{text}"
    );
    assert!(text.contains("a.pem"), "{text}");
}

/// An HTTPS upstream: hyper behind rustls, offering h2 and http/1.1, answering with the ALPN
/// protocol the connection chose.
async fn tls_upstream(pki: &Pki, name: &str) -> SocketAddr {
    let dir = tempfile::tempdir().unwrap();
    write_leaf(dir.path(), "up", &pki.leaf(&[name]));
    let key = weir::tls::certified_key(&dir.path().join("up.pem"), &dir.path().join("up-key.pem"))
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(weir::tls::server_config(vec![key]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let alpn = match tls.get_ref().1.alpn_protocol() {
                    Some(b"h2") => "h2",
                    _ => "http/1.1",
                };
                let service = hyper::service::service_fn(move |_req| async move {
                    let body = Bytes::from(format!("behind-tls alpn={alpn}"));
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(body),
                    ))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    address
}

#[tokio::test]
async fn an_https_upstream_is_reached_with_its_ca_and_server_name_over_h2() {
    let pki = Pki::new();
    let up = tls_upstream(&pki, "upstream.internal").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), pki.ca_pem()).unwrap();
    let yaml = format!(
        "listeners:\n  - name: main\n    address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\n\
         upstreams:\n  - name: secure\n    endpoints: [\"{up}\"]\n    tls: {{ server_name: upstream.internal, ca: ca.pem }}\n\
         routes:\n  - name: app\n    backends: [{{ upstream: secure, weight: 1 }}]\n"
    );
    let w = weir_in(dir, &yaml).await;
    let a = get(&http1_client(), w.address, "/").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.text(), "behind-tls alpn=h2");

    // A wrong server name fails verification: weir answers 502 and counts it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), pki.ca_pem()).unwrap();
    let w = weir_in(
        dir,
        &yaml.replace(
            "server_name: upstream.internal",
            "server_name: other.internal",
        ),
    )
    .await;
    assert_eq!(
        get(&http1_client(), w.address, "/").await.status,
        StatusCode::BAD_GATEWAY
    );
    let tls = [("backend", "secure"), ("kind", "tls")];
    assert_eq!(metric(&w, "weir_upstream_errors_total", &tls).await, 1.0);
}

#[tokio::test]
async fn an_untrusted_upstream_certificate_is_a_502_counted_as_tls_not_connect() {
    let pki = Pki::new();
    let up = tls_upstream(&pki, "upstream.internal").await;
    // No `ca`: the system's roots, which do not know the test CA.
    let yaml = format!(
        "listeners:\n  - name: main\n    address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\n\
         upstreams:\n  - name: secure\n    endpoints: [\"{up}\"]\n    tls: {{ server_name: upstream.internal }}\n\
         routes:\n  - name: app\n    backends: [{{ upstream: secure, weight: 1 }}]\n"
    );
    let w = weir(&yaml).await;
    let a = get(&http1_client(), w.address, "/").await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    let id = a.headers["x-request-id"].to_str().unwrap();
    assert_eq!(
        a.text(),
        format!("weir: the TLS handshake with the upstream failed (request ID {id})\n")
    );
    for (kind, want) in [("tls", 1.0), ("connect", 0.0)] {
        let labels = [("backend", "secure"), ("kind", kind)];
        assert_eq!(
            metric(&w, "weir_upstream_errors_total", &labels).await,
            want,
            "{kind}"
        );
    }
    let failures = [
        ("route", "app"),
        ("backend", "secure"),
        ("outcome", "failure"),
    ];
    assert_eq!(metric(&w, "weir_responses_total", &failures).await, 1.0);
}

#[tokio::test]
async fn a_renamed_tls_listener_keeps_tls_until_a_restart() {
    let up = upstream("u").await;
    let t = tls_weir(up.address).await;
    let renamed = tls_config(up.address).replace("- name: main", "- name: public");
    std::fs::write(&t.weir.path, renamed).unwrap();
    reload(&t.weir).await.unwrap();
    let c: Value =
        serde_json::from_slice(&get(&http1_client(), t.weir.admin, "/config").await.body).unwrap();
    let warnings = c["last_reload"]["warnings"].to_string();
    assert!(warnings.contains("restart weir"), "{c:#}");
    // The bound socket still terminates TLS with its certificates.
    let tls = handshake(&t, dns("b.example.com"), &[]).await;
    assert_eq!(tls.get_ref().1.peer_certificates().unwrap()[0], t.b.der);
    assert_eq!(get_over(tls, "/").await.1, "u");
}
