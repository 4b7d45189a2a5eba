//! Test harness: real hyper upstreams on ephemeral loopback ports, weir started in-process from
//! a real file, and real clients.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use weir::server::Running;

type Body = BoxBody<Bytes, hyper::Error>;

fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A test upstream: answers with its name, and on some paths does more:
/// `/echo` streams the request body back, `/headers` lists the request headers,
/// `/slow?ms=N` waits N ms first, `/trailers` answers with trailers, `/status/N` answers N,
/// `/ws` accepts a WebSocket and echoes its messages.
/// Requests to paths under `/record` are kept (method, path, body) in `recorded`.
pub struct Upstream {
    pub address: SocketAddr,
    pub hits: Arc<AtomicU64>,
    pub connections: Arc<AtomicU64>,
    pub recorded: Recorded,
}

pub type Recorded = Arc<std::sync::Mutex<Vec<(http::Method, String, Bytes)>>>;

impl Upstream {
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

pub async fn upstream(name: &'static str) -> Upstream {
    upstream_at(name, "127.0.0.1:0".parse().unwrap()).await
}

/// A test upstream on `address` (port 0: an ephemeral one).
pub async fn upstream_at(name: &'static str, address: SocketAddr) -> Upstream {
    let recorded = Recorded::default();
    let record = recorded.clone();
    serve(address, recorded, move |req| {
        answer(name, req, record.clone())
    })
    .await
}

/// An upstream that answers every request with `status` after `delay`, with an empty body.
pub async fn fixed_upstream(status: u16, delay: Duration) -> Upstream {
    serve(
        "127.0.0.1:0".parse().unwrap(),
        Recorded::default(),
        move |_| async move {
            tokio::time::sleep(delay).await;
            let mut r = Response::new(full(""));
            *r.status_mut() = StatusCode::from_u16(status).unwrap();
            Ok(r)
        },
    )
    .await
}

/// Serves `handler` on `address` (HTTP/1.1 with upgrades, or h2c), counting connections and
/// requests.
async fn serve<F, Fut>(address: SocketAddr, recorded: Recorded, handler: F) -> Upstream
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let listener = TcpListener::bind(address).await.unwrap();
    let address = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicU64::new(0));
    let connections = Arc::new(AtomicU64::new(0));
    let (counter, accepted) = (hits.clone(), connections.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let (counter, handler) = (counter.clone(), handler.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    handler(req)
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Upstream {
        address,
        hits,
        connections,
        recorded,
    }
}

async fn answer(
    name: &'static str,
    mut req: Request<Incoming>,
    recorded: Recorded,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let response = match path.as_str() {
        p if p.starts_with("/record") => {
            let method = req.method().clone();
            let body = req.into_body().collect().await.map(|c| c.to_bytes());
            recorded
                .lock()
                .unwrap()
                .push((method, path.clone(), body.unwrap_or_default()));
            Response::new(full(name))
        }
        "/echo" => Response::new(req.into_body().boxed()),
        "/headers" => {
            let mut text = format!("version: {:?}\n", req.version());
            for (k, v) in req.headers() {
                text.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
            }
            Response::new(full(text))
        }
        "/slow" => {
            let ms: u64 = query.trim_start_matches("ms=").parse().unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::new(full(name))
        }
        "/trailers" => {
            let mut trailers = HeaderMap::new();
            trailers.insert("x-checksum", "abc123".parse().unwrap());
            let frames = vec![
                Ok::<_, hyper::Error>(Frame::data(Bytes::from_static(b"with trailers"))),
                Ok(Frame::trailers(trailers)),
            ];
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
                frames,
            ))));
            r.headers_mut()
                .insert("trailer", "x-checksum".parse().unwrap());
            r
        }
        "/ws" => {
            let key = req.headers().get("sec-websocket-key").cloned();
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let upgraded = on_upgrade.await.unwrap();
                let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    None,
                )
                .await;
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        ws.send(msg).await.unwrap();
                    }
                }
            });
            let mut r = Response::new(full(""));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = r.headers_mut();
            h.insert("connection", "upgrade".parse().unwrap());
            h.insert("upgrade", "websocket".parse().unwrap());
            let accept = derive_accept_key(key.as_ref().map(|k| k.as_bytes()).unwrap_or(b""));
            h.insert("sec-websocket-accept", accept.parse().unwrap());
            r
        }
        p if p.starts_with("/status/") => {
            let code: u16 = p["/status/".len()..].parse().unwrap();
            let mut r = Response::new(full(name));
            *r.status_mut() = StatusCode::from_u16(code).unwrap();
            r
        }
        _ => Response::new(full(name)),
    };
    Ok(response)
}

/// An address that accepts connections and never answers on them.
pub async fn blackhole() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    address
}

/// The value of the sample `name{labels}` in a text exposition; labels in any order.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            let all = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            (metric == name && all).then(|| value.parse().unwrap())
        })
}

/// The sample `name{labels}` on weir's `/metrics`, 0 when the series does not exist (yet).
pub async fn metric(w: &Weir, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = get(&http1_client(), w.admin, "/metrics").await;
    sample(text.text(), name, labels).unwrap_or(0.0)
}

/// An address on which nothing listens.
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// weir serving a config file written from `yaml` into a temporary directory.
pub struct Weir {
    pub address: SocketAddr,
    pub admin: SocketAddr,
    pub path: std::path::PathBuf,
    pub running: Running,
    _dir: tempfile::TempDir,
}

/// Starts weir on `yaml`, in which the listener must be named `main`.
pub async fn weir(yaml: &str) -> Weir {
    let dir = tempfile::tempdir().unwrap();
    weir_in(dir, yaml).await
}

/// Starts weir on `yaml` written as `weir.yaml` in `dir`.
pub async fn weir_in(dir: tempfile::TempDir, yaml: &str) -> Weir {
    std::fs::write(dir.path().join("weir.yaml"), yaml).unwrap();
    weir_at(dir, "weir.yaml").await
}

/// Starts weir on the config already at `file` inside `dir` (a ConfigMap layout, a git-sync
/// link), watching it there.
pub async fn weir_at(dir: tempfile::TempDir, file: &str) -> Weir {
    use_sandbox();
    let path = dir.path().join(file);
    let candidate =
        weir::reload::read_file(&path).unwrap_or_else(|r| panic!("config:\n{}", r.errors));
    let running = weir::server::start(candidate, Some(path.clone()))
        .await
        .unwrap();
    Weir {
        address: running.address("main").unwrap(),
        admin: running.admin_address,
        path,
        running,
        _dir: dir,
    }
}

/// Reloads the file of `w` and says whether it now serves (`Err` with the refusal). The file
/// watcher may have tried the same bytes first (then `reload` has nothing new to do): the last
/// attempt in the history tells its outcome.
pub async fn reload(w: &Weir) -> Result<(), String> {
    let reloader = &w.running.reloader;
    match reloader.reload().await {
        Ok(true) => Ok(()),
        Err(e) => Err(e.to_string()),
        Ok(false) => {
            let record = reloader.record();
            let last = record.last();
            match &last.error {
                None => Ok(()),
                Some(e) => Err(e.clone()),
            }
        }
    }
}

/// Policies run in a child process, the weir binary; this test binary, which runs weir
/// in-process, is not it.
pub fn use_sandbox() {
    weir::config::policy::use_sandbox_program(std::path::Path::new(env!("CARGO_BIN_EXE_weir")));
}

/// A config with one listener `main` on an ephemeral port, the given upstreams (name and
/// endpoints) and routes (YAML list items, indented by four spaces under `routes:`).
pub fn config(upstreams: &[(&str, &[SocketAddr])], routes: &str) -> String {
    let mut y = String::from(
        "listeners:\n  - name: main\n    address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nupstreams:\n",
    );
    for (name, endpoints) in upstreams {
        let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
        y.push_str(&format!(
            "  - name: {name}\n    endpoints: [{}]\n",
            list.join(", ")
        ));
    }
    y.push_str("routes:\n");
    y.push_str(routes);
    y
}

/// A two-backend route `app` over upstreams `stable` and `canary`.
pub fn split_config(stable: SocketAddr, canary: SocketAddr, ws: u32, wc: u32) -> String {
    config(
        &[("stable", &[stable]), ("canary", &[canary])],
        &format!(
            "  - name: app\n    backends:\n      - {{ upstream: stable, weight: {ws} }}\n      - {{ upstream: canary, weight: {wc} }}\n"
        ),
    )
}

/// weir over upstreams `a`, `b` and `c` with these weights in one route `app`.
pub async fn three_way(weights: [u32; 3]) -> (Weir, [Upstream; 3]) {
    let ups = [
        upstream("a").await,
        upstream("b").await,
        upstream("c").await,
    ];
    let [wa, wb, wc] = weights;
    let yaml = config(
        &[
            ("a", &[ups[0].address]),
            ("b", &[ups[1].address]),
            ("c", &[ups[2].address]),
        ],
        &format!(
            "  - name: app\n    backends:\n      - {{ upstream: a, weight: {wa} }}\n      - {{ upstream: b, weight: {wb} }}\n      - {{ upstream: c, weight: {wc} }}\n"
        ),
    );
    (weir(&yaml).await, ups)
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn http1_client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2c_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

pub struct Answer {
    pub status: StatusCode,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Answer {
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

pub async fn send(client: &TestClient, req: Request<Full<Bytes>>) -> Answer {
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("no answer within 20 s")
        .expect("request failed");
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    Answer {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    }
}

pub async fn get(client: &TestClient, address: SocketAddr, path: &str) -> Answer {
    let req = Request::get(format!("http://{address}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(client, req).await
}

/// Sends `n` requests to `/` and counts the answers by body.
pub async fn tally(address: SocketAddr, n: usize) -> std::collections::BTreeMap<String, usize> {
    let client = http1_client();
    let mut counts = std::collections::BTreeMap::new();
    let mut pending = futures_util::stream::iter(0..n)
        .map(|_| {
            let client = client.clone();
            async move { get(&client, address, "/").await }
        })
        .buffer_unordered(16);
    while let Some(a) = pending.next().await {
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        *counts.entry(a.text().to_owned()).or_insert(0) += 1;
    }
    counts
}

/// How a [`seeded_upstream`] plays its version: each answer is a 500 with probability
/// `failure_rate`, and comes after a log-normal latency (`median`, log standard deviation
/// `log_sd`) plus `extra`.
#[derive(Clone, Copy, Debug)]
pub struct Behaviour {
    pub failure_rate: f64,
    pub median: Duration,
    pub log_sd: f64,
    pub extra: Duration,
}

/// An upstream whose failures and latencies are drawn from a ChaCha8 generator seeded with
/// `seed`, in the order requests arrive (so a run is reproducible per arm, though not which arm
/// weir's unseeded draw sends a request to).
pub async fn seeded_upstream(seed: u64, behaviour: Behaviour) -> Upstream {
    use rand::{RngExt, SeedableRng};
    let rng = Arc::new(std::sync::Mutex::new(
        rand_chacha::ChaCha8Rng::seed_from_u64(seed),
    ));
    serve(
        "127.0.0.1:0".parse().unwrap(),
        Recorded::default(),
        move |_| {
            let (fails, latency) = {
                let mut rng = rng.lock().unwrap();
                let fails = rng.random::<f64>() < behaviour.failure_rate;
                // Box-Muller: a standard normal draw from two uniform ones.
                let (u1, u2) = (1.0 - rng.random::<f64>(), rng.random::<f64>());
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                let latency = behaviour.median.mul_f64((behaviour.log_sd * z).exp());
                (fails, latency + behaviour.extra)
            };
            async move {
                tokio::time::sleep(latency).await;
                let mut r = Response::new(full(""));
                if fails {
                    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                }
                Ok(r)
            }
        },
    )
    .await
}

/// Requests to `/` at a steady rate, open loop (each on its own task, at most 256 in flight,
/// as independent clients would send them), until stopped or 240 s.
pub struct Paced {
    stop: Arc<std::sync::atomic::AtomicBool>,
    sent: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
    started: std::time::Instant,
}

/// Starts [`Paced`] traffic to `address` at `rate` requests a second, sent in batches 10 ms
/// apart. A machine that cannot keep up skips batches rather than piling requests up, so the
/// rate drops but latencies stay those of the upstreams.
pub fn paced(address: SocketAddr, rate: u64) -> Paced {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let (flag, count) = (stop.clone(), sent.clone());
    let task = tokio::spawn(async move {
        let client = http1_client();
        let slots = Arc::new(tokio::sync::Semaphore::new(256));
        let started = std::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while !flag.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(240) {
            tick.tick().await;
            for _ in 0..rate.div_ceil(100) {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    break;
                };
                count.fetch_add(1, Ordering::Relaxed);
                let client = client.clone();
                tokio::spawn(async move {
                    let req = Request::get(format!("http://{address}/"))
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    if let Ok(Ok(r)) =
                        tokio::time::timeout(Duration::from_secs(20), client.request(req)).await
                    {
                        let _ = r.into_body().collect().await;
                    }
                    drop(slot);
                });
            }
        }
    });
    Paced {
        stop,
        sent,
        task,
        started: std::time::Instant::now(),
    }
}

impl Paced {
    /// Stops the traffic; returns the requests sent and the rate achieved.
    pub async fn stop(self) -> (u64, f64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let sent = self.sent.load(Ordering::Relaxed);
        (sent, sent as f64 / self.started.elapsed().as_secs_f64())
    }
}

/// A misbehaving upstream: `handler` gets each accepted TCP connection as it is, to read and
/// write whatever bytes it wants.
pub async fn raw_upstream<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handler(stream));
        }
    });
    address
}

/// A raw upstream that answers every request head of every connection with the same bytes
/// (without reading a body), until the client closes.
pub async fn answering_upstream(answer: &'static [u8]) -> SocketAddr {
    raw_upstream(move |mut stream| async move {
        use tokio::io::AsyncWriteExt;
        while read_head(&mut stream).await.is_some() {
            if stream.write_all(answer).await.is_err() {
                return;
            }
        }
    })
    .await
}

/// Reads one HTTP/1.1 request head from `stream` (up to the empty line); `None` at its end.
pub async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// What weir answered to raw bytes: the status (0 when the connection closed without one) and
/// the whole response text.
pub struct RawAnswer {
    pub status: u16,
    pub text: String,
}

/// Writes `bytes` to a new connection to `address` and reads one response (head and a
/// `content-length` body), or until weir closes the connection; at most 30 s.
pub async fn raw(address: SocketAddr, bytes: &[u8]) -> RawAnswer {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(address).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_response(&mut s).await
}

/// Reads one response from `s` as [`raw`] does.
pub async fn read_response(s: &mut tokio::net::TcpStream) -> RawAnswer {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            let n = match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            out.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&out);
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if out.len() >= end + 4 + length {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), read).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    RawAnswer { status, text }
}

/// A Prometheus server (Debian's `prometheus`) on an ephemeral loopback port, scraping the
/// targets of a file (`file_sd`, rewritten with [`Prometheus::set_targets`]) every second under
/// job `job`. Killed when dropped.
pub struct Prometheus {
    child: std::process::Child,
    pub address: SocketAddr,
    targets: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn scraping(job: &str) -> Prometheus {
        Prometheus::start(job, None)
    }

    /// [`Prometheus::scraping`], also evaluating the rules in `rules` every second.
    pub fn with_rules(job: &str, rules: &std::path::Path) -> Prometheus {
        Prometheus::start(job, Some(rules))
    }

    fn start(job: &str, rules: Option<&std::path::Path>) -> Prometheus {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let targets = dir.path().join("targets.json");
        std::fs::write(&targets, "[]").unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{ scrape_interval: 1s, scrape_timeout: 900ms, evaluation_interval: 1s }}\n\
                 rule_files: [{}]\n\
                 scrape_configs:\n  - job_name: {job}\n    file_sd_configs: [{{ files: [\"{}\"], refresh_interval: 1s }}]\n",
                rules.map(|r| format!("\"{}\"", r.display())).unwrap_or_default(),
                targets.display()
            ),
        )
        .unwrap();
        let mut child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .args(["--web.listen-address=127.0.0.1:0", "--log.level=info"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("prometheus is installed (apt-get install prometheus)");
        // Prometheus logs the port it bound; the rest of its log is drained and dropped.
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(at) = line.find("msg=\"Listening on\" address=") {
                    let address = line[at..].rsplit('=').next().unwrap_or("").trim();
                    let _ = tx.send(address.to_owned());
                }
            }
        });
        let address = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("prometheus listened within 60 s")
            .parse()
            .unwrap();
        Prometheus {
            child,
            address,
            targets,
            _dir: dir,
        }
    }

    /// Scrapes exactly `targets` from now on (the file is replaced whole, as file_sd wants).
    pub fn set_targets(&self, targets: &[SocketAddr]) {
        let list: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
        let json = serde_json::json!([{ "targets": list }]).to_string();
        let tmp = self.targets.with_extension("tmp");
        std::fs::write(&tmp, json).unwrap();
        std::fs::rename(&tmp, &self.targets).unwrap();
    }

    /// Waits until the server answers queries (it listens before its storage is ready).
    pub async fn ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while get(&http1_client(), self.address, "/-/ready").await.status != StatusCode::OK {
            assert!(
                tokio::time::Instant::now() < deadline,
                "prometheus was not ready within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Prometheus {
    /// An instant query; the `data` of a successful answer.
    pub async fn query(&self, promql: &str) -> serde_json::Value {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let a = get(
            &http1_client(),
            self.address,
            &format!("/api/v1/query?query={encoded}"),
        )
        .await;
        let answer: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(answer["status"], "success", "{promql}: {answer}");
        answer["data"].clone()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `git ARGS` in `dir` as a child process of the runtime (never blocking a worker thread);
/// its standard output. Panics with its standard error when it fails.
pub async fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = tokio::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .await
        .expect("git is installed");
    assert!(
        out.status.success(),
        "git {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `promtool check metrics` (Debian's prometheus package; CI installs it) on `text`.
fn promtool_check_metrics(text: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (apt-get install prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// promtool takes `text` as a valid exposition: exit 0, or 3 for lint remarks (style, not
/// format).
pub fn promtool_accepts(text: &str) {
    let out = promtool_check_metrics(text);
    let code = out.status.code();
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(
        code == Some(0) || code == Some(3),
        "promtool refused the exposition: {}{report}",
        String::from_utf8_lossy(&out.stdout),
    );
    assert!(!report.contains("error while linting"), "{report}");
}

/// promtool takes `text` and says nothing, not even a lint remark.
pub fn promtool_is_silent(text: &str) {
    let out = promtool_check_metrics(text);
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An HTTP/2 frame header and payload, for clients that write their frames byte for byte.
pub fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}
