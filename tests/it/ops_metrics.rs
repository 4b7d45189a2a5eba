//! The metrics an operator alerts on, read from a running weir's `/metrics`: whether the last
//! reload applied (`weir_config_last_reload_successful`), the build and process metrics, the
//! request and response bytes per (route, backend), and the whole exposition through
//! `promtool check metrics` with no remark at all.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;

use crate::support::*;

async fn exposition(w: &Weir) -> String {
    let a = get(&http1_client(), w.admin, "/metrics").await;
    assert_eq!(a.status, StatusCode::OK);
    a.text().to_owned()
}

#[tokio::test]
async fn the_last_reload_gauge_is_1_when_a_config_applied_and_0_while_the_file_is_refused() {
    let up = upstream("app").await;
    let good = config(
        &[("app", &[up.address])],
        "  - name: app\n    backends: [{ upstream: app, weight: 1 }]\n",
    );
    let w = weir(&good).await;
    let gauge = |text: &str| sample(text, "weir_config_last_reload_successful", &[]);
    assert_eq!(gauge(&exposition(&w).await), Some(1.0), "the first load");
    std::fs::write(&w.path, good.replace("weight: 1", "weight: -1")).unwrap();
    assert!(reload(&w).await.is_err());
    let text = exposition(&w).await;
    assert_eq!(
        gauge(&text),
        Some(0.0),
        "refused: the running config is older"
    );
    assert_eq!(
        sample(&text, "weir_config_reloads_total", &[("result", "failure")]),
        Some(1.0)
    );
    // Traffic still flows on the old config.
    assert_eq!(get(&http1_client(), w.address, "/").await.text(), "app");
    std::fs::write(&w.path, good.replace("weight: 1", "weight: 2")).unwrap();
    reload(&w).await.unwrap();
    assert_eq!(gauge(&exposition(&w).await), Some(1.0), "fixed");
}

#[tokio::test]
async fn request_and_response_bytes_are_counted_per_route_and_backend() {
    let (stable, canary) = (upstream("stable").await, upstream("canary").await);
    let w = weir(&split_config(stable.address, canary.address, 0, 1)).await;
    let mut sent = 0u64;
    for (client, size) in [(http1_client(), 1_000usize), (h2c_client(), 70_000)] {
        for _ in 0..3 {
            let body = Bytes::from(vec![b'x'; size]);
            let req = Request::post(format!("http://{}/echo", w.address))
                .body(Full::new(body))
                .unwrap();
            let a = send(&client, req).await;
            assert_eq!(a.body.len(), size);
            sent += size as u64;
        }
    }
    // A GET without a body: only the response's bytes ("canary").
    get(&http1_client(), w.address, "/").await;
    // The bytes of the response are counted when it ends: read after the clients got them.
    let text = exposition(&w).await;
    let canary = [("route", "app"), ("backend", "canary")];
    assert_eq!(
        sample(&text, "weir_request_bytes_total", &canary),
        Some(sent as f64)
    );
    assert_eq!(
        sample(&text, "weir_response_bytes_total", &canary),
        Some((sent + 6) as f64)
    );
    let stable = [("route", "app"), ("backend", "stable")];
    assert_eq!(
        sample(&text, "weir_request_bytes_total", &stable),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "weir_response_bytes_total", &stable),
        Some(0.0)
    );
}

#[tokio::test]
async fn the_whole_exposition_passes_promtool_without_a_remark() {
    let (stable, canary) = (upstream("stable").await, upstream("canary").await);
    let w = weir(&split_config(stable.address, canary.address, 50, 50)).await;
    tally(w.address, 50).await;
    get(&http1_client(), w.address, "/status/503").await;
    let text = exposition(&w).await;
    for name in [
        "weir_build_info",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "weir_config_last_reload_successful",
        "weir_request_bytes_total",
        "weir_response_bytes_total",
        "weir_access_log_lines_total",
        "weir_trace_spans_dropped_total",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} in\n{text}"
        );
    }
    let build = text
        .lines()
        .find(|l| l.starts_with("weir_build_info{"))
        .unwrap();
    assert!(
        build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
            && build.ends_with(" 1"),
        "{build}"
    );
    promtool_is_silent(&text);
}
