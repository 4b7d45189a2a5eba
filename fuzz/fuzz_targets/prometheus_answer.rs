//! An answer of Prometheus's query API (from the network, read by `weir rollout`) -> values:
//! never a panic, whatever the JSON says.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = weir::rollout::fleet::prometheus::values(data);
});
