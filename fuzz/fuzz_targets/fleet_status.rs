//! A fleet's rollout status file (read by every replica with its config) -> parse: never a
//! panic; what parses writes back to bytes that parse to the same status.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::config::FleetStatus;

fuzz_target!(|data: &[u8]| {
    if let Ok(status) = FleetStatus::parse(data) {
        let again = FleetStatus::parse(&status.to_bytes()).expect("written status parses");
        assert_eq!(again, status);
    }
});
