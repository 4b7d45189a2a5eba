#!/usr/bin/env bash
# CI smoke run of every cargo-fuzz target: one build, then each target for a bounded time on its
# committed seeds (default 30 s each; FUZZ_SECONDS=N to change). Fails on the first crash, with
# libFuzzer's report and the input under fuzz/artifacts/TARGET/. Needs cargo-fuzz (`cargo
# install cargo-fuzz`) and a nightly toolchain; without one, the stable compiler is asked to
# accept the nightly flags cargo-fuzz passes (RUSTC_BOOTSTRAP=1). Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-30}"
if cargo +nightly --version >/dev/null 2>&1; then
    fuzz() { cargo +nightly fuzz "$@"; }
else
    echo "fuzz/smoke.sh: no nightly toolchain, using stable with RUSTC_BOOTSTRAP=1" >&2
    fuzz() { RUSTC_BOOTSTRAP=1 cargo fuzz "$@"; }
fi
# No sanitizer: weir is safe Rust (no `unsafe`), so ASan adds build time and little else; the
# coverage instrumentation and debug assertions stay.
fuzz build -s none
for target in $(fuzz list); do
    mkdir -p "fuzz/corpus/$target"
    # Work on a copy of the seeds: new inputs libFuzzer finds stay out of the repository.
    work="$(mktemp -d)"
    cp -r "fuzz/corpus/$target/." "$work/"
    echo "== $target: ${seconds}s"
    status=0
    fuzz run -s none "$target" "$work" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$work.log" 2>&1 || status=$?
    grep -E '^(stat::number_of_executed_units|stat::new_units_added|Done)' "$work.log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 60 "$work.log" >&2
        echo "fuzz target $target failed (the input is under fuzz/artifacts/$target/)" >&2
        rm -rf "$work" "$work.log"
        exit "$status"
    fi
    rm -rf "$work" "$work.log"
done
