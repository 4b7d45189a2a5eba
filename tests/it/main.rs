//! One integration test binary (see matklad, "Delete Cargo Integration Tests").

mod admin;
mod check_cmd;
mod config_errors;
mod forwarding;
mod grpc;
mod hostile;
mod lifecycle;
mod limits;
mod mirror;
mod picking;
mod policies;
mod reload;
mod resilience;
mod rollout;
mod routing;
mod support;
mod tls;
