//! gRPC through weir with a real implementation (tonic's server and client machinery, messages
//! derived with prost by hand, no code generation): the four call kinds, trailers and statuses,
//! large messages, deadlines, a 50/50 split, and what weir answers when it fails the call.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use http::uri::PathAndQuery;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_stream::Stream;
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

use crate::support::*;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    #[prost(string, tag = "1")]
    pub text: String,
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
    #[prost(uint32, tag = "3")]
    pub count: u32,
}

const MAX: usize = 32 * 1024 * 1024;
type BoxFut<T> = Pin<Box<dyn Future<Output = Result<Response<T>, Status>> + Send>>;
type MsgStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;

/// Unary: echoes `data`, names the server; `text: "fail"` answers NOT_FOUND; `count` > 0 sleeps
/// that many ms first. A server made to fail answers every call with its code.
struct Unary(&'static str, Option<Code>);
impl tonic::server::UnaryService<Msg> for Unary {
    type Response = Msg;
    type Future = BoxFut<Msg>;
    fn call(&mut self, req: Request<Msg>) -> Self::Future {
        let (name, fail) = (self.0, self.1);
        Box::pin(async move {
            if let Some(code) = fail {
                return Err(Status::new(code, "failing on purpose"));
            }
            let m = req.into_inner();
            if m.count > 0 {
                tokio::time::sleep(Duration::from_millis(u64::from(m.count))).await;
            }
            if m.text == "fail" {
                return Err(Status::not_found("no such thing"));
            }
            Ok(Response::new(Msg {
                text: name.to_owned(),
                data: m.data,
                count: 0,
            }))
        })
    }
}

/// Server streaming: `count` messages numbered 0..count; then, when `text` is "internal", the
/// call ends with INTERNAL.
struct ServerStream;
impl tonic::server::ServerStreamingService<Msg> for ServerStream {
    type Response = Msg;
    type ResponseStream = MsgStream;
    type Future = BoxFut<MsgStream>;
    fn call(&mut self, req: Request<Msg>) -> Self::Future {
        let m = req.into_inner();
        let (n, internal) = (m.count, m.text == "internal");
        Box::pin(async move {
            let s = futures_util::stream::iter((0..n).map(|i| {
                Ok(Msg {
                    text: i.to_string(),
                    ..Msg::default()
                })
            }))
            .chain(futures_util::stream::iter(
                internal.then(|| Err(Status::internal("broke after the messages"))),
            ));
            Ok(Response::new(Box::pin(s) as MsgStream))
        })
    }
}

/// Client streaming: the number of messages and the concatenated texts.
struct ClientStream;
impl tonic::server::ClientStreamingService<Msg> for ClientStream {
    type Response = Msg;
    type Future = BoxFut<Msg>;
    fn call(&mut self, req: Request<Streaming<Msg>>) -> Self::Future {
        Box::pin(async move {
            let mut stream = req.into_inner();
            let (mut text, mut count) = (String::new(), 0);
            while let Some(m) = stream.message().await? {
                text.push_str(&m.text);
                count += 1;
            }
            Ok(Response::new(Msg {
                text,
                count,
                ..Msg::default()
            }))
        })
    }
}

/// Bidirectional: answers each message with its text upper-cased, as it arrives.
struct Bidi;
impl tonic::server::StreamingService<Msg> for Bidi {
    type Response = Msg;
    type ResponseStream = MsgStream;
    type Future = BoxFut<MsgStream>;
    fn call(&mut self, req: Request<Streaming<Msg>>) -> Self::Future {
        Box::pin(async move {
            let s = req.into_inner().map(|m| {
                m.map(|m| Msg {
                    text: m.text.to_uppercase(),
                    ..Msg::default()
                })
            });
            Ok(Response::new(Box::pin(s) as MsgStream))
        })
    }
}

fn grpc_server() -> tonic::server::Grpc<ProstCodec<Msg, Msg>> {
    tonic::server::Grpc::new(ProstCodec::default())
        .max_decoding_message_size(MAX)
        .max_encoding_message_size(MAX)
}

/// A gRPC server over h2c on an ephemeral port, naming itself `name` in unary answers.
async fn grpc_upstream(name: &'static str) -> SocketAddr {
    failing_grpc_upstream(name, None).await.0
}

/// A gRPC server as [`grpc_upstream`] whose unary calls all fail with `fail` (when set), and the
/// count of unary calls it got.
async fn failing_grpc_upstream(
    name: &'static str,
    fail: Option<Code>,
) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let counted = counted.clone();
                    async move {
                        let response = match req.uri().path() {
                            "/weir.test.Echo/Unary" => {
                                counted.fetch_add(1, Ordering::SeqCst);
                                grpc_server().unary(Unary(name, fail), req).await
                            }
                            "/weir.test.Echo/ServerStream" => {
                                grpc_server().server_streaming(ServerStream, req).await
                            }
                            "/weir.test.Echo/ClientStream" => {
                                grpc_server().client_streaming(ClientStream, req).await
                            }
                            "/weir.test.Echo/Bidi" => grpc_server().streaming(Bidi, req).await,
                            _ => Status::unimplemented("unknown method").into_http(),
                        };
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .http2_only()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (address, calls)
}

type Channel = Client<HttpConnector, tonic::body::Body>;

fn client(address: SocketAddr) -> tonic::client::Grpc<Channel> {
    let channel: Channel = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    tonic::client::Grpc::with_origin(channel, format!("http://{address}").parse().unwrap())
        .max_decoding_message_size(MAX)
        .max_encoding_message_size(MAX)
}

fn path(method: &'static str) -> PathAndQuery {
    PathAndQuery::from_static(method)
}

async fn unary(address: SocketAddr, m: Msg, timeout: Option<Duration>) -> Result<Msg, Status> {
    let mut c = client(address);
    c.ready().await.unwrap();
    let mut req = Request::new(m);
    if let Some(t) = timeout {
        req.set_timeout(t);
    }
    c.unary(req, path("/weir.test.Echo/Unary"), ProstCodec::default())
        .await
        .map(Response::into_inner)
}

fn grpc_config(upstreams: &[(&str, SocketAddr)]) -> String {
    let mut y = String::from(
        "listeners:\n  - name: main\n    address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nupstreams:\n",
    );
    for (name, a) in upstreams {
        y.push_str(&format!(
            "  - {{ name: {name}, endpoints: [\"{a}\"], protocol: http2 }}\n"
        ));
    }
    y.push_str("routes:\n  - name: grpc\n    backends:\n");
    for (name, _) in upstreams {
        y.push_str(&format!("      - {{ upstream: {name}, weight: 50 }}\n"));
    }
    y
}

#[tokio::test]
async fn all_four_call_kinds_pass_through_weir() {
    let up = grpc_upstream("one").await;
    let w = weir(&grpc_config(&[("one", up)])).await;

    let m = unary(
        w.address,
        Msg {
            data: vec![7; 10],
            ..Msg::default()
        },
        None,
    )
    .await
    .unwrap();
    assert_eq!((m.text.as_str(), m.data.len()), ("one", 10));

    let mut c = client(w.address);
    c.ready().await.unwrap();
    let req = Request::new(Msg {
        count: 50,
        ..Msg::default()
    });
    let mut stream: Streaming<Msg> = c
        .server_streaming(
            req,
            path("/weir.test.Echo/ServerStream"),
            ProstCodec::default(),
        )
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        got.push(m.text);
    }
    assert_eq!(got, (0..50).map(|i| i.to_string()).collect::<Vec<_>>());

    c.ready().await.unwrap();
    let outgoing = futures_util::stream::iter(["a", "b", "c"].map(|t| Msg {
        text: t.into(),
        ..Msg::default()
    }));
    let m: Msg = c
        .client_streaming(
            Request::new(outgoing),
            path("/weir.test.Echo/ClientStream"),
            ProstCodec::default(),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!((m.text.as_str(), m.count), ("abc", 3));

    // Bidirectional: each answer arrives before the next message is sent.
    c.ready().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<Msg>(1);
    let outgoing = tokio_stream::wrappers::ReceiverStream::new(rx);
    tx.send(Msg {
        text: "ping".into(),
        ..Msg::default()
    })
    .await
    .unwrap();
    let mut answers: Streaming<Msg> = c
        .streaming(
            Request::new(outgoing),
            path("/weir.test.Echo/Bidi"),
            ProstCodec::default(),
        )
        .await
        .unwrap()
        .into_inner();
    for word in ["ping", "through", "weir"] {
        if word != "ping" {
            tx.send(Msg {
                text: word.into(),
                ..Msg::default()
            })
            .await
            .unwrap();
        }
        assert_eq!(
            answers.message().await.unwrap().unwrap().text,
            word.to_uppercase()
        );
    }
    drop(tx);
    assert!(answers.message().await.unwrap().is_none());
}

#[tokio::test]
async fn large_messages_and_upstream_statuses_pass_through() {
    let up = grpc_upstream("one").await;
    let w = weir(&grpc_config(&[("one", up)])).await;
    // 8 MiB each way: far past HTTP/2's initial 64 KiB window, so flow control does the work.
    let data: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let m = unary(
        w.address,
        Msg {
            data: data.clone(),
            ..Msg::default()
        },
        None,
    )
    .await
    .unwrap();
    assert!(m.data == data, "the 8 MiB message came back changed");

    let status = unary(
        w.address,
        Msg {
            text: "fail".into(),
            ..Msg::default()
        },
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "no such thing");
}

#[tokio::test]
async fn calls_split_fifty_fifty_between_two_grpc_upstreams() {
    let (a, b) = (grpc_upstream("a").await, grpc_upstream("b").await);
    let w = weir(&grpc_config(&[("a", a), ("b", b)])).await;
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..200 {
        let m = unary(w.address, Msg::default(), None).await.unwrap();
        *counts.entry(m.text).or_insert(0) += 1;
    }
    // n = 200, p = 0.5: sd = 7.1; allow 5 sd = 35.
    let a_count: i32 = counts.get("a").copied().unwrap_or(0);
    assert!((a_count - 100).abs() <= 35, "{counts:?}");
    assert_eq!(counts.values().sum::<i32>(), 200);
}

#[tokio::test]
async fn a_client_deadline_is_honoured_with_deadline_exceeded() {
    let up = grpc_upstream("slow").await;
    let w = weir(&grpc_config(&[("slow", up)])).await;
    let started = std::time::Instant::now();
    let slow = Msg {
        count: 5_000,
        ..Msg::default()
    };
    let status = unary(w.address, slow, Some(Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "weir waited past the client's deadline"
    );
    // A call within its deadline succeeds on the same route.
    let quick = Msg {
        count: 10,
        ..Msg::default()
    };
    assert!(
        unary(w.address, quick, Some(Duration::from_secs(5)))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_dead_grpc_upstream_is_answered_with_unavailable_and_counted() {
    let dead = closed_port().await;
    let w = weir(&grpc_config(&[("dead", dead)])).await;
    let status = unary(w.address, Msg::default(), None).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let text = get(&http1_client(), w.admin, "/metrics")
        .await
        .text()
        .to_owned();
    assert!(
        text.contains("weir_requests_total{backend=\"dead\",code=\"502\",route=\"grpc\"} 1"),
        "{text}"
    );
    assert!(text.contains("weir_upstream_errors_total{backend=\"dead\",kind=\"connect\"} 1"));
}

/// A gRPC route `grpc` over `stable` and `canary` with a rollout of the canary (fast-fail after
/// 20 calls below half of 99 %; a 30 s interval, so only fast-fail can act within the test).
fn grpc_rollout_config(stable: SocketAddr, canary: SocketAddr) -> String {
    grpc_config(&[("stable", stable), ("canary", canary)]).replace(
        "  - name: grpc\n",
        "  - name: grpc\n    rollout: { canary: canary, steps: [50, 100], interval: 30s, min_requests: 10 }\n",
    )
}

async fn stats(w: &Weir) -> serde_json::Value {
    serde_json::from_slice(&get(&http1_client(), w.admin, "/stats").await.body).unwrap()
}

/// The canary's success rate in `/stats` and `weir_backend_success_ratio`.
async fn canary_success(w: &Weir) -> (serde_json::Value, f64) {
    let s = stats(w).await;
    let canary = s["routes"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "canary")
        .unwrap()["success_rate"]
        .clone();
    let labels = [("route", "grpc"), ("backend", "canary")];
    (
        canary,
        metric(w, "weir_backend_success_ratio", &labels).await,
    )
}

#[tokio::test]
async fn a_grpc_canary_answering_unavailable_is_rolled_back_by_fast_fail_within_25_calls() {
    let stable = grpc_upstream("stable").await;
    let (canary, calls) = failing_grpc_upstream("canary", Some(Code::Unavailable)).await;
    let w = weir(&grpc_rollout_config(stable, canary)).await;
    let mut state = serde_json::Value::Null;
    for _ in 0..400 {
        // Every call is HTTP 200 with the status in a trailers-only answer.
        let _ = unary(w.address, Msg::default(), None).await;
        state = stats(&w).await["routes"][0]["rollout"]["state"].clone();
        if state == "rolled_back" {
            break;
        }
    }
    assert_eq!(state, "rolled_back");
    let failed = calls.load(Ordering::SeqCst);
    assert!((20..=25).contains(&failed), "{failed} failed canary calls");
    let (rate, ratio) = canary_success(&w).await;
    assert_eq!((rate.as_f64(), ratio), (Some(0.0), 0.0));
    let labels = [("backend", "canary"), ("grpc_status", "14")];
    assert_eq!(
        metric(&w, "weir_grpc_responses_total", &labels).await,
        failed as f64
    );
    let code = [("backend", "canary"), ("code", "200")];
    assert_eq!(
        metric(&w, "weir_requests_total", &code).await,
        failed as f64
    );
}

#[tokio::test]
async fn a_grpc_canary_answering_not_found_is_not_rolled_back() {
    let stable = grpc_upstream("stable").await;
    let (canary, calls) = failing_grpc_upstream("canary", Some(Code::NotFound)).await;
    let w = weir(&grpc_rollout_config(stable, canary)).await;
    for _ in 0..400 {
        let _ = unary(w.address, Msg::default(), None).await;
        if calls.load(Ordering::SeqCst) >= 30 {
            break;
        }
    }
    assert!(calls.load(Ordering::SeqCst) >= 30);
    assert_eq!(
        stats(&w).await["routes"][0]["rollout"]["state"],
        "progressing"
    );
    let (rate, ratio) = canary_success(&w).await;
    assert_eq!((rate.as_f64(), ratio), (Some(1.0), 1.0));
    let labels = [("backend", "canary"), ("grpc_status", "5")];
    assert_eq!(
        metric(&w, "weir_grpc_responses_total", &labels).await,
        calls.load(Ordering::SeqCst) as f64
    );
}

#[tokio::test]
async fn a_streaming_call_that_ends_with_internal_after_100_messages_counts_as_one_failure() {
    let up = grpc_upstream("one").await;
    let w = weir(&grpc_config(&[("one", up)])).await;
    let mut c = client(w.address);
    c.ready().await.unwrap();
    let req = Request::new(Msg {
        text: "internal".into(),
        count: 100,
        ..Msg::default()
    });
    let mut stream: Streaming<Msg> = c
        .server_streaming(
            req,
            path("/weir.test.Echo/ServerStream"),
            ProstCodec::default(),
        )
        .await
        .unwrap()
        .into_inner();
    let mut got = 0;
    let status = loop {
        match stream.message().await {
            Ok(Some(_)) => got += 1,
            Ok(None) => panic!("the call ended without its status"),
            Err(status) => break status,
        }
    };
    assert_eq!((got, status.code()), (100, Code::Internal));
    let outcome = |o| [("route", "grpc"), ("backend", "one"), ("outcome", o)];
    assert_eq!(
        metric(&w, "weir_responses_total", &outcome("failure")).await,
        1.0
    );
    assert_eq!(
        metric(&w, "weir_responses_total", &outcome("success")).await,
        0.0
    );
    let internal = [("backend", "one"), ("grpc_status", "13")];
    assert_eq!(
        metric(&w, "weir_grpc_responses_total", &internal).await,
        1.0
    );
}

#[tokio::test]
async fn the_grpc_failure_codes_are_set_per_route() {
    let (up, _) = failing_grpc_upstream("one", Some(Code::NotFound)).await;
    let (other, _) = failing_grpc_upstream("other", Some(Code::Unavailable)).await;
    let yaml = grpc_config(&[("one", up), ("other", other)]).replace(
        "  - name: grpc\n",
        "  - name: grpc\n    grpc: { failure_codes: [NOT_FOUND] }\n",
    );
    let w = weir(&yaml).await;
    for _ in 0..20 {
        let _ = unary(w.address, Msg::default(), None).await;
    }
    let outcome = |b, o| [("route", "grpc"), ("backend", b), ("outcome", o)];
    let one_failed = metric(&w, "weir_responses_total", &outcome("one", "failure")).await;
    let other_ok = metric(&w, "weir_responses_total", &outcome("other", "success")).await;
    assert_eq!(
        one_failed + other_ok,
        20.0,
        "NOT_FOUND fails here, UNAVAILABLE does not"
    );
    assert_eq!(
        metric(&w, "weir_responses_total", &outcome("one", "success")).await,
        0.0
    );
}
