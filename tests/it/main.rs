//! One integration test binary (see matklad, "Delete Cargo Integration Tests").

mod admin;
mod admin_access;
mod check_cmd;
mod config_errors;
mod dashboards;
mod demo;
mod deploy;
mod forwarding;
mod grpc;
mod hostile;
mod lifecycle;
mod limits;
mod live_page;
mod mirror;
mod picking;
mod policies;
mod reload;
mod resilience;
mod rollout;
mod routing;
mod support;
mod tls;
mod tooling;
