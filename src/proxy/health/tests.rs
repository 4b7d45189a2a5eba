//! Thresholds, the slow-start curve, the endpoint pick and `live_pick` as data; the task's
//! timing on a paused clock with a probe that needs no socket; the HTTP probe and the whole
//! checker against real hyper servers on 127.0.0.1 that fail on demand.

use super::*;
use std::convert::Infallible;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, AtomicU64};

use http::Response;
use hyper::service::service_fn;
use hyper_util::server::conn::auto;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;

// === thresholds ===

/// The one helper of the threshold table: results in order (`P` pass, `F` fail), thresholds;
/// the standing after each result (`+` healthy, `-` not) and the changes with their streaks.
fn check(results: &str, healthy_threshold: u32, unhealthy_threshold: u32) -> (String, Vec<Change>) {
    let mut t = Tracker::default();
    let mut changes = Vec::new();
    let standing = results
        .chars()
        .map(|c| {
            if let Some(ch) = t.observe(c == 'P', healthy_threshold, unhealthy_threshold) {
                changes.push(ch);
            }
            if t.healthy() { '+' } else { '-' }
        })
        .collect();
    (standing, changes)
}

#[test]
fn thresholds_count_results_in_a_row_and_the_first_result_decides() {
    let down = |streak| Change {
        healthy: false,
        streak,
    };
    let up = |streak| Change {
        healthy: true,
        streak,
    };
    for (results, h, u, standing, changes) in [
        ("P", 2, 3, "+", vec![]),
        ("F", 2, 3, "-", vec![down(1)]),
        ("PFFF", 2, 3, "+++-", vec![down(3)]),
        ("PFFPFFF", 2, 3, "++++++-", vec![down(3)]),
        ("FPP", 2, 3, "--+", vec![down(1), up(2)]),
        ("FPFPP", 2, 3, "----+", vec![down(1), up(2)]),
        (
            "PFPFPF",
            1,
            1,
            "+-+-+-",
            vec![down(1), up(1), down(1), up(1), down(1)],
        ),
        ("FPPPPF", 4, 2, "----++", vec![down(1), up(4)]),
    ] {
        assert_eq!(
            check(results, h, u),
            (standing.to_string(), changes),
            "{results} {h} {u}"
        );
    }
}

// === the curve ===

#[test]
fn the_ramp_follows_envoys_curve_from_the_minimum_to_full() {
    let window = Duration::from_secs(10);
    let at = |secs: f64, aggression: f64, min: u32| {
        ramp_factor(
            Duration::from_secs_f64(secs),
            &SlowStartSpec {
                window,
                aggression,
                min_weight_percent: min,
            },
        )
    };
    // Linear: the minimum until it is overtaken, then t / window.
    assert_eq!(
        [0.0, 0.5, 1.0, 2.5, 5.0, 9.0, 10.0, 60.0].map(|t| at(t, 1.0, 10)),
        [100, 100, 100, 250, 500, 900, 1000, 1000]
    );
    // Aggression 2: sqrt(t / window), faster early.
    assert_eq!([2.5, 5.0].map(|t| at(t, 2.0, 10)), [500, 707]);
    // Aggression 0.5: (t / window)^2, slower early.
    assert_eq!([2.5, 5.0, 8.0].map(|t| at(t, 0.5, 10)), [100, 250, 640]);
    assert_eq!(at(0.0, 1.0, 1), 10);
    assert_eq!(at(0.0, 1.0, 100), 1000);
}

#[test]
fn bad_checks_and_slow_starts_are_refused_with_their_fields() {
    let spec = HealthCheckSpec {
        path: "healthz".into(),
        interval: Duration::from_millis(1),
        timeout: Duration::ZERO,
        healthy_threshold: 0,
        unhealthy_threshold: 0,
        expected_statuses: vec![200..=299, 99..=200, RangeInclusive::new(300, 200)],
        host: Some("a b".into()),
    };
    let errors: Vec<String> = spec
        .validate()
        .iter()
        .map(|e| format!("{}: {e}", e.field()))
        .collect();
    assert_eq!(
        errors,
        [
            "path: `healthz` is not a path: it must start with `/`",
            "interval: must be at least 10ms",
            "timeout: must be at least 10ms",
            "healthy_threshold: must be at least 1",
            "unhealthy_threshold: must be at least 1",
            "expected_statuses: `99-200` is not a status range between 100 and 599",
            "expected_statuses: `300-200` is not a status range between 100 and 599",
            "host: `a b` is not a valid Host",
        ]
    );
    assert!(HealthCheckSpec::default().validate().is_empty());
    let ss = SlowStartSpec {
        window: Duration::ZERO,
        aggression: f64::NAN,
        min_weight_percent: 0,
    };
    let errors: Vec<String> = ss
        .validate()
        .iter()
        .map(|e| format!("{}: {e}", e.field()))
        .collect();
    assert_eq!(
        errors,
        [
            "window: must be at least 10ms",
            "aggression: must be above 0",
            "min_weight_percent: must be between 1 and 100",
        ]
    );
    assert!(
        SlowStartSpec::new(Duration::from_secs(30))
            .validate()
            .is_empty()
    );
}

// === the pick ===

#[test]
fn without_a_ramp_the_pick_is_round_robin_over_healthy_available_endpoints() {
    let h = EndpointHealth::new(4);
    h.set_healthy(1, false);
    let no_draw = |_| unreachable!("no draw without a ramp");
    let picks: Vec<Option<usize>> = (0..6).map(|s| h.pick(s, |_| true, no_draw)).collect();
    assert_eq!(
        picks,
        [Some(0), Some(2), Some(2), Some(3), Some(0), Some(2)]
    );
    // The pool's own say (an ejection) counts too.
    let picks: Vec<Option<usize>> = (0..4).map(|s| h.pick(s, |i| i != 2, no_draw)).collect();
    assert_eq!(picks, [Some(0), Some(3), Some(3), Some(3)]);
    assert!(h.any_healthy());
    for i in [0, 2, 3] {
        h.set_healthy(i, false);
    }
    assert!(!h.any_healthy());
    assert_eq!(h.pick(0, |_| true, no_draw), None);
    // Flipping twice counts once.
    h.set_healthy(3, true);
    h.set_healthy(3, true);
    assert_eq!(h.healthy.load(Ordering::Relaxed), 1);
}

/// The share each endpoint gets over `draws` picks with a seeded ChaCha8 draw.
fn shares(h: &EndpointHealth, draws: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut counts = vec![0; h.len()];
    for k in 0..draws {
        let i = h.pick(k, |_| true, |n| rng.random_range(0..n)).unwrap();
        counts[i] += 1;
    }
    counts
}

#[test]
fn during_a_ramp_picks_follow_the_factors() {
    let h = EndpointHealth::new(3);
    h.begin_ramp(2, 250);
    // Factors 1000, 1000, 250: p = 1000/2250 = 0.444 and 250/2250 = 0.111. Over 20,000 picks:
    // sd = sqrt(20000 * 0.444 * 0.556) = 70 and sqrt(20000 * 0.111 * 0.889) = 44; allow 5 sd.
    let c = shares(&h, 20_000, 11);
    assert!((c[0] as i64 - 8_889).abs() <= 350, "{c:?}");
    assert!((c[1] as i64 - 8_889).abs() <= 350, "{c:?}");
    assert!((c[2] as i64 - 2_222).abs() <= 220, "{c:?}");
    // An unhealthy endpoint gets nothing, ramping or not.
    h.set_healthy(0, false);
    let c = shares(&h, 1_000, 12);
    assert_eq!(c[0], 0);
}

// === live_pick ===

#[test]
fn a_backend_without_endpoints_gives_its_share_to_the_others_in_proportion() {
    // Every draw of the route, counted exactly: no randomness needed.
    let counts = |weights: &[u32], live: &[bool]| {
        let total: u32 = weights.iter().sum();
        let mut c = vec![0u32; weights.len()];
        let mut last = 0;
        for d in 0..u64::from(total) {
            let b = live_pick(weights.iter().copied(), d, |b| live[b]).unwrap();
            assert!(b >= last, "draws keep their order");
            last = b;
            c[b] += 1;
        }
        c
    };
    assert_eq!(counts(&[90, 10], &[true, false]), [100, 0]);
    assert_eq!(counts(&[90, 10], &[false, true]), [0, 100]);
    assert_eq!(counts(&[90, 10], &[true, true]), [90, 10]);
    // 50/30/20 without the middle one: 50/70 and 20/70 of 100 draws, within one draw.
    let c = counts(&[50, 30, 20], &[true, false, true]);
    assert_eq!(c[1], 0);
    assert!(
        (f64::from(c[0]) - 100.0 * 50.0 / 70.0).abs() <= 1.0,
        "{c:?}"
    );
    assert!(
        (f64::from(c[2]) - 100.0 * 20.0 / 70.0).abs() <= 1.0,
        "{c:?}"
    );
    // A live backend of weight 0 takes nothing; nothing live is `None`.
    assert_eq!(live_pick([0, 100].into_iter(), 5, |b| b == 0), None);
    assert_eq!(live_pick([60, 40].into_iter(), 5, |_| false), None);
    assert_eq!(live_pick(std::iter::empty(), 0, |_| true), None);
}

// === the task, on a paused clock ===

/// A probe that needs no socket: each endpoint passes while its flag is up; every call is
/// recorded with the (paused) time.
struct Scripted {
    up: Vec<AtomicBool>,
    calls: Mutex<Vec<(usize, Instant)>>,
}

impl Scripted {
    fn new(n: usize) -> Arc<Scripted> {
        Arc::new(Scripted {
            up: (0..n).map(|_| AtomicBool::new(true)).collect(),
            calls: Mutex::new(Vec::new()),
        })
    }
}

impl Prober for Scripted {
    async fn probe(&self, endpoint: usize) -> Result<(), CheckFailure> {
        self.calls.lock().unwrap().push((endpoint, Instant::now()));
        if self.up[endpoint].load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(CheckFailure::Status(503))
        }
    }
}

type Events = Arc<Mutex<Vec<(Instant, String)>>>;

fn recorder() -> (Events, impl Fn(HealthEvent) + Send + 'static) {
    let events: Events = Arc::default();
    let sink = events.clone();
    (events, move |e: HealthEvent| {
        let line = match e {
            HealthEvent::Changed { endpoint, change } => {
                format!(
                    "endpoint {endpoint} healthy={} after {}",
                    change.healthy, change.streak
                )
            }
            HealthEvent::Ramped { endpoint } => format!("endpoint {endpoint} ramped"),
            HealthEvent::Checked { .. } => return,
        };
        sink.lock().unwrap().push((Instant::now(), line));
    })
}

#[tokio::test(start_paused = true)]
async fn a_failing_endpoint_is_out_within_two_intervals_and_back_after_the_healthy_threshold() {
    let interval = Duration::from_secs(1);
    let spec = HealthCheckSpec {
        interval,
        healthy_threshold: 2,
        unhealthy_threshold: 2,
        ..HealthCheckSpec::default()
    };
    let prober = Scripted::new(2);
    let health = EndpointHealth::new(2);
    let (events, observe) = recorder();
    let start = Instant::now();
    let task = tokio::spawn(run(
        prober.clone(),
        Some(spec),
        None,
        Arc::downgrade(&health),
        observe,
    ));

    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let failed_at = Instant::now();
    prober.up[1].store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert!(!health.is_healthy(1) && health.is_healthy(0));
    assert_eq!(health.pick(1, |_| true, |_| 0), Some(0));
    let down = events.lock().unwrap()[0].clone();
    assert_eq!(down.1, "endpoint 1 healthy=false after 2");
    assert!(
        down.0 - failed_at <= 2 * interval,
        "{:?}",
        down.0 - failed_at
    );

    prober.up[1].store(true, Ordering::Relaxed);
    let recovered_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    assert!(health.is_healthy(1));
    let up = events.lock().unwrap()[1].clone();
    assert_eq!(up.1, "endpoint 1 healthy=true after 2");
    assert!(up.0 - recovered_at <= 2 * interval);

    // One check per endpoint per interval, from the start.
    let calls = prober.calls.lock().unwrap().clone();
    let of_1: Vec<Duration> = calls
        .iter()
        .filter(|(e, _)| *e == 1)
        .map(|(_, t)| *t - start)
        .collect();
    let expected: Vec<Duration> = (0..of_1.len() as u32).map(|k| interval * k).collect();
    assert_eq!(of_1, expected);
    assert!(of_1.len() >= 7);
    drop(health);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(task.is_finished(), "the task ends once its table is gone");
}

/// The share of a returning endpoint, second by second, as requests see it: 10,000 seeded picks
/// between it and one full endpoint each second of a 10 s linear ramp.
#[tokio::test(start_paused = true)]
async fn slow_start_ramps_a_returning_endpoints_share_second_by_second() {
    let spec = HealthCheckSpec {
        interval: Duration::from_secs(1),
        healthy_threshold: 1,
        unhealthy_threshold: 1,
        ..HealthCheckSpec::default()
    };
    let window = Duration::from_secs(10);
    let prober = Scripted::new(2);
    prober.up[1].store(false, Ordering::Relaxed);
    let health = EndpointHealth::new(2);
    let (events, observe) = recorder();
    tokio::spawn(run(
        prober.clone(),
        Some(spec),
        Some(SlowStartSpec::new(window)),
        Arc::downgrade(&health),
        observe,
    ));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!health.is_healthy(1));
    assert_eq!(shares(&health, 1_000, 1)[1], 0);
    prober.up[1].store(true, Ordering::Relaxed);
    // The check at 2 s brings it back; sample just after each second of its ramp.
    tokio::time::sleep(Duration::from_millis(510)).await;
    assert!(health.is_healthy(1) && health.ramping());
    let mut series = Vec::new();
    for second in 0..=10u32 {
        let c = shares(&health, 10_000, u64::from(second));
        let share = c[1] as f64 / 10_000.0;
        // The factor lags the curve by at most one ramp tick (window / 50 = 200 ms = 20 per
        // mille) plus the 10 ms after the second.
        let f = f64::from(ramp_factor(
            Duration::from_secs(second.into()),
            &SlowStartSpec::new(window),
        ));
        let (lo, hi) = ((f - 21.0).max(100.0), (f + 21.0).min(1000.0));
        let (p_lo, p_hi) = (lo / (1000.0 + lo), hi / (1000.0 + hi));
        // 10,000 picks: sd <= 0.005; allow 5 sd around the band.
        assert!(
            share >= p_lo - 0.025 && share <= p_hi + 0.025,
            "second {second}: {share} not in {p_lo}..{p_hi}"
        );
        series.push(share);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(series.windows(2).all(|w| w[1] >= w[0] - 0.02), "{series:?}");
    assert!(series[0] < 0.12 && series[10] > 0.47, "{series:?}");
    assert!(!health.ramping());
    let lines: Vec<String> = events
        .lock()
        .unwrap()
        .iter()
        .map(|(_, l)| l.clone())
        .collect();
    assert_eq!(
        lines,
        [
            "endpoint 1 healthy=false after 1",
            "endpoint 1 healthy=true after 1",
            "endpoint 1 ramped"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_back_from_ejection_ramps_without_health_checks() {
    let prober = Scripted::new(3);
    let health = EndpointHealth::new(3);
    let (events, observe) = recorder();
    let window = Duration::from_secs(4);
    tokio::spawn(run(
        prober.clone(),
        None,
        Some(SlowStartSpec::new(window)),
        Arc::downgrade(&health),
        observe,
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!health.ramping());
    // What the pool does when an ejection ends.
    health.begin_ramp(1, 100);
    assert_eq!(health.factor(1), 100);
    tokio::time::sleep(Duration::from_millis(2_010)).await;
    assert!(
        (480..=520).contains(&health.factor(1)),
        "{}",
        health.factor(1)
    );
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(health.factor(1), FULL);
    assert!(!health.ramping());
    assert!(
        prober.calls.lock().unwrap().is_empty(),
        "no checks configured, none made"
    );
    assert_eq!(
        events.lock().unwrap().last().unwrap().1,
        "endpoint 1 ramped"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reloaded_pool_inherits_standing_and_ramps() {
    let old = EndpointHealth::new(2);
    old.set_healthy(0, false);
    old.begin_ramp(1, 300);
    let new = EndpointHealth::new(3);
    new.inherit(0, &old, 1);
    new.inherit(2, &old, 0);
    assert!(new.is_healthy(0) && new.is_healthy(1) && !new.is_healthy(2));
    assert_eq!(
        [new.factor(0), new.factor(1), new.factor(2)],
        [300, FULL, FULL]
    );
    assert!(new.ramping());
    assert_eq!(new.healthy.load(Ordering::Relaxed), 2);
}

// === the HTTP probe, against real servers ===

/// A hyper server on 127.0.0.1 (HTTP/1.1 and h2c, or TLS with ALPN) whose answer the test sets:
/// a status, and a delay before it.
struct Upstream {
    address: std::net::SocketAddr,
    status: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<String>>>,
}

async fn upstream(tls: Option<Arc<rustls::ServerConfig>>) -> Upstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let status = Arc::new(AtomicU16::new(200));
    let delay_ms = Arc::new(AtomicU64::new(0));
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let (s, d, log) = (status.clone(), delay_ms.clone(), seen.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (s, d, log, tls) = (s.clone(), d.clone(), log.clone(), tls.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (s, d, log) = (s.clone(), d.clone(), log.clone());
                    async move {
                        let host = req
                            .headers()
                            .get(header::HOST)
                            .map(|h| h.to_str().unwrap().to_string())
                            .or_else(|| req.uri().authority().map(|a| a.to_string()))
                            .unwrap_or_default();
                        let ua = req
                            .headers()
                            .get(header::USER_AGENT)
                            .map_or("", |v| v.to_str().unwrap());
                        log.lock().unwrap().push(format!(
                            "{:?} {} {} host={host} ua={ua}",
                            req.version(),
                            req.method(),
                            req.uri().path_and_query().unwrap()
                        ));
                        let delay = d.load(Ordering::Relaxed);
                        if delay > 0 {
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                        }
                        let mut r =
                            Response::new(http_body_util::Full::new(Bytes::from_static(b"ok")));
                        *r.status_mut() =
                            http::StatusCode::from_u16(s.load(Ordering::Relaxed)).unwrap();
                        Ok::<_, Infallible>(r)
                    }
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                let _ = match tls {
                    None => {
                        builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    }
                    Some(config) => {
                        match tokio_rustls::TlsAcceptor::from(config).accept(stream).await {
                            Ok(s) => builder.serve_connection(TokioIo::new(s), service).await,
                            Err(_) => return,
                        }
                    }
                };
            });
        }
    });
    Upstream {
        address,
        status,
        delay_ms,
        seen,
    }
}

fn authority(u: &Upstream) -> Authority {
    u.address.to_string().parse().unwrap()
}

/// A CA, a certificate for `localhost` signed by it, the server's config and the client's.
fn tls_pair() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let mut server = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

#[tokio::test]
async fn the_http_probe_passes_on_expected_statuses_only_and_names_each_failure() {
    let u = upstream(None).await;
    let spec = |statuses: Vec<RangeInclusive<u16>>| HealthCheckSpec {
        path: "/healthz?deep=1".into(),
        expected_statuses: statuses,
        ..HealthCheckSpec::default()
    };
    let probe =
        |s: &HealthCheckSpec, p: CheckProtocol| HttpProber::new(&[authority(&u)], s, p, None);
    let result = |r: Result<(), CheckFailure>| match r {
        Ok(()) => "passed".to_string(),
        Err(e) => e.to_string(),
    };
    let default = spec(vec![200..=399]);
    for (status, statuses, want) in [
        (200, vec![200..=399], "passed"),
        (302, vec![200..=399], "passed"),
        (302, vec![200..=200], "unexpected status 302"),
        (503, vec![200..=399], "unexpected status 503"),
        (404, vec![200..=299, 404..=404], "passed"),
    ] {
        u.status.store(status, Ordering::Relaxed);
        assert_eq!(
            result(probe(&spec(statuses), CheckProtocol::Http1).probe(0).await),
            want,
            "{status}"
        );
    }
    u.status.store(200, Ordering::Relaxed);
    assert_eq!(
        result(probe(&default, CheckProtocol::Http2).probe(0).await),
        "passed"
    );
    let custom_host = HealthCheckSpec {
        host: Some("app.internal".into()),
        ..default.clone()
    };
    assert_eq!(
        result(probe(&custom_host, CheckProtocol::Http1).probe(0).await),
        "passed"
    );
    let seen = u.seen.lock().unwrap().clone();
    let ua = concat!("weir-health-check/", env!("CARGO_PKG_VERSION"));
    let host = u.address.to_string();
    assert_eq!(
        seen[0],
        format!("HTTP/1.1 GET /healthz?deep=1 host={host} ua={ua}")
    );
    assert_eq!(
        seen[5],
        format!("HTTP/2.0 GET /healthz?deep=1 host={host} ua={ua}")
    );
    assert_eq!(
        seen[6],
        format!("HTTP/1.1 GET /healthz?deep=1 host=app.internal ua={ua}")
    );
}

#[tokio::test]
async fn a_slow_endpoint_times_out_and_a_closed_port_fails_to_connect() {
    let u = upstream(None).await;
    u.delay_ms.store(5_000, Ordering::Relaxed);
    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr()
            .unwrap()
            .to_string()
            .parse::<Authority>()
            .unwrap()
    };
    let spec = HealthCheckSpec {
        timeout: Duration::from_millis(200),
        ..HealthCheckSpec::default()
    };
    let prober = Arc::new(HttpProber::new(
        &[authority(&u), closed],
        &spec,
        CheckProtocol::Http1,
        None,
    ));
    let results = probe_all(&prober, 2, spec.timeout).await;
    let text: Vec<String> = results
        .into_iter()
        .map(|(i, r)| {
            format!(
                "{i}: {}",
                r.map_or_else(|e| e.to_string(), |()| "passed".into())
            )
        })
        .collect();
    assert_eq!(text[0], "0: no response within the timeout");
    assert!(text[1].starts_with("1: connect failed: "), "{}", text[1]);
}

#[tokio::test]
async fn checks_of_a_tls_upstream_verify_its_certificate_over_http1_and_h2() {
    let (server, client) = tls_pair();
    let u = upstream(Some(server)).await;
    let tls = |name: Option<&str>| CheckTls {
        config: client.clone(),
        server_name: name.map(|n| rustls::pki_types::ServerName::try_from(n.to_string()).unwrap()),
    };
    let spec = HealthCheckSpec::default();
    for protocol in [CheckProtocol::Http1, CheckProtocol::Http2] {
        let p = HttpProber::new(
            &[authority(&u)],
            &spec,
            protocol,
            Some(tls(Some("localhost"))),
        );
        p.probe(0).await.unwrap();
    }
    // The endpoint's own name (127.0.0.1) is not on the certificate: a TLS failure.
    let p = HttpProber::new(
        &[authority(&u)],
        &spec,
        CheckProtocol::Http1,
        Some(tls(None)),
    );
    let e = p.probe(0).await.unwrap_err();
    assert!(matches!(e, CheckFailure::Tls(_)), "{e}");
    let seen = u.seen.lock().unwrap().clone();
    assert!(seen[0].starts_with("HTTP/1.1 GET /healthz"), "{seen:?}");
    assert!(seen[1].starts_with("HTTP/2.0 GET /healthz"), "{seen:?}");
    assert_eq!(seen.len(), 2);
}

/// The whole checker with real probes, on the real clock: an endpoint that starts failing stops
/// getting picks, and comes back after `healthy_threshold` passes.
#[tokio::test]
async fn the_checker_takes_a_real_failing_endpoint_out_and_brings_it_back() {
    let (a, b) = (upstream(None).await, upstream(None).await);
    let spec = HealthCheckSpec {
        interval: Duration::from_millis(100),
        // Generous: a check that takes longer on a busy machine must not flap the endpoint.
        timeout: Duration::from_secs(5),
        healthy_threshold: 3,
        unhealthy_threshold: 2,
        ..HealthCheckSpec::default()
    };
    let prober = Arc::new(HttpProber::new(
        &[authority(&a), authority(&b)],
        &spec,
        CheckProtocol::Http1,
        None,
    ));
    let health = EndpointHealth::new(2);
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(run(
        prober,
        Some(spec),
        None,
        Arc::downgrade(&health),
        move |e| {
            let _ = tx.send(match e {
                HealthEvent::Changed { endpoint, change } => (endpoint, Some(change)),
                HealthEvent::Checked { endpoint, .. } => (endpoint, None),
                HealthEvent::Ramped { .. } => return,
            });
        },
    ));
    let next = async |rx: &mut mpsc::UnboundedReceiver<(usize, Option<Change>)>| {
        tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("an event within 30 s")
            .unwrap()
    };
    let next_change = async |rx: &mut mpsc::UnboundedReceiver<(usize, Option<Change>)>| loop {
        if let (e, Some(change)) = next(rx).await {
            return (e, change);
        }
    };
    // Past the first check (which decides at once), so the thresholds count.
    while next(&mut rx).await != (1, None) {}
    b.status.store(503, Ordering::Relaxed);
    assert_eq!(
        next_change(&mut rx).await,
        (
            1,
            Change {
                healthy: false,
                streak: 2
            }
        )
    );
    let picks: Vec<usize> = (0..100)
        .filter_map(|s| health.pick(s, |_| true, |_| 0))
        .collect();
    assert_eq!(picks, [0; 100]);
    b.status.store(204, Ordering::Relaxed);
    assert_eq!(
        next_change(&mut rx).await,
        (
            1,
            Change {
                healthy: true,
                streak: 3
            }
        )
    );
    assert_eq!(health.pick(1, |_| true, |_| 0), Some(1));
    assert!(
        a.seen.lock().unwrap().len() >= 5,
        "endpoint 0 is checked all along"
    );
}
