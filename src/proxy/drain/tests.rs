//! Timelines of snapshots and client connections: which connections a promotion, a rollback or a
//! plain weight change closes.

use super::*;

fn route<'a>(route: &'a str, backends: &[(&'a str, u32)]) -> RouteWeights<'a> {
    RouteWeights {
        route,
        backends: backends.to_vec(),
    }
}

enum Step<'a> {
    /// A new snapshot with these routes and weights.
    Snapshot(Vec<RouteWeights<'a>>),
    /// Connection `n` (opened now if it is new) has a request served by (route, backend).
    Serve(usize, &'a str, &'a str),
}
use Step::*;

/// The one helper every timeline goes through: after each snapshot, the connections its
/// retirements close (each connection task checks once per epoch change, as phase 2 wires it).
fn check(steps: Vec<Step<'_>>) -> Vec<Vec<usize>> {
    let mut current: Vec<RouteWeights<'_>> = Vec::new();
    let mut log = DrainLog::default();
    let mut conns: Vec<Option<Served>> = Vec::new();
    let mut closed_per_snapshot = Vec::new();
    for step in steps {
        match step {
            Snapshot(routes) => {
                let (_, mask) = retired(&current, &routes);
                let next = log.after(mask);
                let mut closed = Vec::new();
                if next.epoch() != log.epoch() {
                    for (n, c) in conns.iter_mut().enumerate() {
                        if c.as_ref().is_some_and(|s| s.check(&next)) {
                            closed.push(n);
                            *c = None;
                        }
                    }
                }
                log = next;
                current = routes;
                closed_per_snapshot.push(closed);
            }
            Serve(n, r, b) => {
                if conns.len() <= n {
                    conns.resize_with(n + 1, || None);
                }
                let served = conns[n].get_or_insert_with(|| Served::new(log.epoch()));
                served.mark(backend_bit(r, b));
            }
        }
    }
    closed_per_snapshot
}

const STABLE: &str = "app-stable";
const CANARY: &str = "app-canary";

#[test]
fn a_promotion_closes_the_connections_stable_served_and_only_those() {
    let closed = check(vec![
        Snapshot(vec![route("app", &[(STABLE, 90), (CANARY, 10)])]),
        Serve(0, "app", STABLE),
        Serve(1, "app", CANARY),
        Serve(2, "app", STABLE),
        Serve(2, "app", CANARY),
        Serve(3, "app", CANARY),
        Serve(3, "app", CANARY),
        // Steps: weights move, nothing retires.
        Snapshot(vec![route("app", &[(STABLE, 50), (CANARY, 50)])]),
        // promoted.
        Snapshot(vec![route("app", &[(STABLE, 0), (CANARY, 100)])]),
        // A new connection after the promotion is never closed by it.
        Serve(4, "app", CANARY),
        Snapshot(vec![route("app", &[(STABLE, 0), (CANARY, 100)])]),
    ]);
    assert_eq!(closed, [vec![], vec![], vec![0, 2], vec![]]);
}

#[test]
fn a_rollback_closes_the_connections_the_canary_served() {
    let closed = check(vec![
        Snapshot(vec![route("app", &[(STABLE, 90), (CANARY, 10)])]),
        Serve(0, "app", STABLE),
        Serve(1, "app", CANARY),
        Serve(1, "app", STABLE),
        Serve(2, "app", CANARY),
        Snapshot(vec![route("app", &[(STABLE, 100), (CANARY, 0)])]),
        // The next rollout: a new canary definition gets weight again, nothing retires.
        Serve(0, "app", STABLE),
        Snapshot(vec![route("app", &[(STABLE, 95), (CANARY, 5)])]),
    ]);
    assert_eq!(closed, [vec![], vec![1, 2], vec![]]);
}

#[test]
fn a_retirement_in_one_route_leaves_connections_of_another_route_open() {
    // Distinct bits, checked: a shared bit would make this test pass for the wrong reason.
    let bits = [
        backend_bit("app", STABLE),
        backend_bit("app", CANARY),
        backend_bit("api", STABLE),
        backend_bit("api", CANARY),
    ];
    // Pinned, computed independently (Python: FNV-1a 64 + SplitMix64 of `route\0backend`,
    // modulo 64): a change would drain the wrong connections across weir versions.
    assert_eq!(bits, [1 << 26, 1 << 36, 1 << 21, 1 << 22]);
    let closed = check(vec![
        Snapshot(vec![
            route("app", &[(STABLE, 90), (CANARY, 10)]),
            route("api", &[(STABLE, 90), (CANARY, 10)]),
        ]),
        Serve(0, "app", STABLE),
        Serve(1, "api", STABLE),
        Serve(2, "api", CANARY),
        Snapshot(vec![
            route("app", &[(STABLE, 0), (CANARY, 100)]),
            route("api", &[(STABLE, 90), (CANARY, 10)]),
        ]),
        // A route that leaves the file retires its backends too.
        Snapshot(vec![route("app", &[(STABLE, 0), (CANARY, 100)])]),
    ]);
    assert_eq!(closed, [vec![], vec![0], vec![1, 2]]);
}

#[test]
fn a_connection_that_missed_more_retirements_than_the_log_keeps_closes_if_it_was_served() {
    let mut log = DrainLog::default();
    for k in 0..(DRAIN_HISTORY as u64 + 3) {
        log = log.after(1 << (k % 64));
    }
    let epoch = log.epoch();
    assert_eq!(epoch, DRAIN_HISTORY as u64 + 3);
    // Within the log: only its own bits count.
    assert!(log.must_close(epoch - 1, 1 << ((epoch - 1) % 64)));
    assert!(!log.must_close(epoch - 1, 1 << 63));
    // Beyond it: served at all means close; never served means stay.
    assert!(log.must_close(0, 1 << 63));
    assert!(!log.must_close(0, 0));
    // Up to date: nothing to do.
    assert!(!log.must_close(epoch, u64::MAX));
    // A snapshot that retires nothing keeps the log as it is.
    assert_eq!(log.after(0), log);
}

#[test]
fn unused_upstreams_are_those_no_route_sends_to_by_weight_any_more() {
    let old = [
        route("app", &[(STABLE, 90), (CANARY, 10)]),
        route("admin", &[(STABLE, 100)]),
        route("beta", &[("app-beta", 0), (CANARY, 100)]),
    ];
    let new = [
        route("app", &[(STABLE, 0), (CANARY, 100)]),
        route("admin", &[(STABLE, 100)]),
        route("beta", &[("app-beta", 0), (CANARY, 100)]),
    ];
    // app-stable still serves `admin`; app-beta never had weight.
    assert!(unused_upstreams(&old, &new).is_empty());
    let new = [
        route("app", &[(STABLE, 100), (CANARY, 0)]),
        route("admin", &[(STABLE, 100)]),
    ];
    assert_eq!(unused_upstreams(&old, &new), [CANARY]);
    let (pairs, mask) = retired(&old, &new);
    assert_eq!(pairs, [("app", CANARY), ("beta", CANARY)]);
    assert_eq!(
        mask,
        backend_bit("app", CANARY) | backend_bit("beta", CANARY)
    );
}

// === the mechanism phase 2 wires into the listener, on real connections ===

mod on_real_connections {
    use super::*;
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty, Full};
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::{Notify, watch};

    /// What a test sees of the server: `arrived` is notified when a request reached the handler
    /// (its bit is marked), `checked` when the connection compared a new drain log.
    struct Server {
        address: std::net::SocketAddr,
        arrived: Arc<Notify>,
        checked: Arc<Notify>,
    }

    /// One connection served as weir's listener serves it, plus the drain check: every request
    /// is "served by" app/app-stable; when a new `DrainLog` arrives the connection compares it
    /// and shuts down gracefully when it must. `hold` keeps a response in flight until notified.
    async fn serve_one(drains: watch::Receiver<DrainLog>, hold: Arc<Notify>, held: bool) -> Server {
        let (arrived, checked) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let (on_arrival, on_check) = (arrived.clone(), checked.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut drains = drains;
            let served = Arc::new(Served::new(drains.borrow().epoch()));
            let s = served.clone();
            let service = service_fn(move |_req| {
                let (s, hold, on_arrival) = (s.clone(), hold.clone(), on_arrival.clone());
                async move {
                    s.mark(backend_bit("app", STABLE));
                    on_arrival.notify_one();
                    if held {
                        hold.notified().await;
                    }
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                        b"stable",
                    ))))
                }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let mut closing = false;
            loop {
                tokio::select! {
                    _ = conn.as_mut() => break,
                    changed = drains.changed(), if !closing => {
                        if changed.is_err() { break; }
                        let log = drains.borrow_and_update().clone();
                        if served.check(&log) {
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                        }
                        on_check.notify_one();
                    }
                }
            }
        });
        Server {
            address,
            arrived,
            checked,
        }
    }

    fn promoted(log: &DrainLog) -> DrainLog {
        let before = [route("app", &[(STABLE, 90), (CANARY, 10)])];
        let after = [route("app", &[(STABLE, 0), (CANARY, 100)])];
        log.after(retired(&before, &after).1)
    }

    async fn read_until_close(stream: &mut tokio::net::TcpStream) -> String {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
            .await
            .expect("the connection closes")
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn an_idle_http1_connection_served_by_a_retired_backend_is_closed() {
        let (tx, rx) = watch::channel(DrainLog::default());
        let server = serve_one(rx, Arc::new(Notify::new()), false).await;
        let mut stream = tokio::net::TcpStream::connect(server.address)
            .await
            .unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = stream.read(&mut buf).await.unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).to_lowercase();
        assert!(
            head.starts_with("http/1.1 200") && !head.contains("connection: close"),
            "{head}"
        );
        let next = promoted(&tx.borrow());
        tx.send(next).unwrap();
        // Idle when the drain comes: closed at once, nothing more written.
        assert_eq!(read_until_close(&mut stream).await, "");
    }

    #[tokio::test]
    async fn an_http1_response_in_flight_gets_connection_close() {
        let (tx, rx) = watch::channel(DrainLog::default());
        let hold = Arc::new(Notify::new());
        let server = serve_one(rx, hold.clone(), true).await;
        let mut stream = tokio::net::TcpStream::connect(server.address)
            .await
            .unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        // The request reached the handler (its bit is marked) before the drain, and the
        // connection compared the drain before the response goes out.
        server.arrived.notified().await;
        let next = promoted(&tx.borrow());
        tx.send(next).unwrap();
        server.checked.notified().await;
        hold.notify_one();
        let response = read_until_close(&mut stream).await.to_lowercase();
        assert!(response.starts_with("http/1.1 200"), "{response}");
        assert!(response.contains("connection: close"), "{response}");
        assert!(response.ends_with("stable"), "{response}");
    }

    #[tokio::test]
    async fn an_http2_connection_gets_goaway_and_its_stream_in_flight_finishes() {
        let (tx, rx) = watch::channel(DrainLog::default());
        let hold = Arc::new(Notify::new());
        let server = serve_one(rx, hold.clone(), true).await;
        let stream = tokio::net::TcpStream::connect(server.address)
            .await
            .unwrap();
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        let driver = tokio::spawn(conn);
        let request = || {
            http::Request::get("http://a/")
                .body(Empty::<Bytes>::new())
                .unwrap()
        };
        let in_flight = send.send_request(request());
        let in_flight = tokio::spawn(in_flight);
        server.arrived.notified().await;
        let next = promoted(&tx.borrow());
        tx.send(next).unwrap();
        server.checked.notified().await;
        hold.notify_one();
        let response = in_flight.await.unwrap().unwrap();
        assert_eq!(
            response.into_body().collect().await.unwrap().to_bytes(),
            "stable"
        );
        // After GOAWAY the client's connection ends; a new request needs a new connection.
        tokio::time::timeout(Duration::from_secs(10), driver)
            .await
            .expect("the client connection ends after GOAWAY")
            .unwrap()
            .unwrap();
        assert!(send.send_request(request()).await.is_err());
    }

    #[tokio::test]
    async fn a_connection_the_retired_backend_never_served_stays_open() {
        let (tx, rx) = watch::channel(DrainLog::default());
        let server = serve_one(rx, Arc::new(Notify::new()), false).await;
        let mut stream = tokio::net::TcpStream::connect(server.address)
            .await
            .unwrap();
        // A rollback of the canary: this connection was served by stable only.
        let before = [route("app", &[(STABLE, 90), (CANARY, 10)])];
        let after = [route("app", &[(STABLE, 100), (CANARY, 0)])];
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let _ = stream.read(&mut buf).await.unwrap();
        let next = tx.borrow().after(retired(&before, &after).1);
        tx.send(next).unwrap();
        server.checked.notified().await;
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        let n = stream.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
}
