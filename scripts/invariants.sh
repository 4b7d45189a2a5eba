#!/usr/bin/env bash
# The invariants of ARCHITECTURE.md that are an absence, checked with grep over src/ (test modules
# left out). Each check names the invariant; the ones a grep cannot see are tests, named in
# ARCHITECTURE.md. Exits 1 on a violation.
set -uo pipefail
cd "$(dirname "$0")/../src"

failed=0
# The code of the given files without comments and test modules, as FILE:LINE:TEXT.
code() {
  for f in "$@"; do
    sed -e 's#^[[:space:]]*//.*##' -e 's#[[:space:]]//.*##' -e '/^#\[cfg(test)\]/,$d' "$f" |
      grep -n . | sed "s#^#$f:#"
  done
}
# Fails with MESSAGE when PATTERN occurs in the code of FILES.
none() {
  local message=$1 pattern=$2; shift 2
  local found
  found=$(code "$@" | grep -E "$pattern" || true)
  if [ -n "$found" ]; then
    echo "FAIL: $message"
    echo "$found" | sed 's/^/  /'
    failed=1
  else
    echo "ok: $message"
  fi
}

none "proxy/ never reads the config file or any file" \
  'config::(load|read_file|load_file|files)|std::fs|File::open' proxy/*.rs
none "split and router do no I/O and read no clock; the draw is an argument" \
  'Instant|SystemTime|std::fs|tokio::|rand::' proxy/split.rs proxy/router.rs
none "config reads files only in config::files" \
  'std::fs|File::open|OpenOptions' $(ls config/*.rs | grep -v config/files.rs)
none "config starts a process only in config::policy" \
  'Command::new' $(ls config/*.rs | grep -v config/policy.rs)
none "config reads no clock and opens no socket" \
  'Instant::now|SystemTime::now|tokio::net|TcpStream|TcpListener' config/*.rs
none "the rollout core reads no clock, no file, no socket, spawns nothing" \
  'Instant::now|SystemTime::now|std::fs|tokio::net|tokio::spawn|hyper|rand::' rollout/mod.rs rollout/machine.rs \
  rollout/compare.rs rollout/comparing.rs
none "the fleet's rollout core reads no clock, no file, no socket, spawns nothing" \
  'Instant::now|SystemTime::now|std::fs|tokio::|hyper|Command' rollout/fleet/mod.rs
none "git runs only in rollout/fleet/git.rs, as a child process of the runtime" \
  'Command::new\("git"\)' $(ls *.rs */*.rs */*/*.rs | grep -v rollout/fleet/git.rs)
none "the fleet's controller never blocks a worker thread on a process" \
  'std::process::Command' rollout/fleet/*.rs
clock=$(code rollout/fleet/controller.rs | grep -cE 'Instant::now\(\)|SystemTime::now\(\)')
if [ "$clock" = 1 ]; then
  echo "ok: the fleet's controller reads the clock in one place (fn now)"
else
  echo "FAIL: the fleet's controller reads the clock in $clock places, not only in fn now"
  failed=1
fi
none "only the control task stores a snapshot" \
  'snapshots\.store\(' $(ls *.rs */*.rs | grep -v reload/control.rs)
none "rollouts and snapshots read no clock: the control task passes the time" \
  'Instant::now\(\)|SystemTime::now\(\)' rollout/*.rs snapshot.rs
clock=$(code reload/control.rs | grep -cE 'Instant::now\(\)|SystemTime::now\(\)')
if [ "$clock" = 2 ]; then
  echo "ok: the control task reads the clock in one place (fn now: both clocks)"
else
  echo "FAIL: the control task reads the clock in $clock places, not only in fn now"
  failed=1
fi
none "weir's own request path takes no lock" \
  'Mutex|RwLock' proxy/*.rs snapshot.rs $(ls metrics/*.rs | grep -v metrics/process.rs)

# The control task's blocking work (the policy sandbox, snapshot builds, the state file) runs
# inside `blocking(..)`: each call is at most two lines after one.
calls=$(code reload/control.rs | grep -nE 'check_policies\(|Snapshot::build\(|write_atomically\(|read_state\(' |
  grep -v 'fn ' | cut -d: -f1)
lines=$(code reload/control.rs)
bad=""
for n in $calls; do
  window=$(sed -n "$(( n > 2 ? n - 2 : 1 )),${n}p" <<<"$lines")
  grep -q 'blocking(' <<<"$window" || bad+="$(sed -n "${n}p" <<<"$lines")"$'\n'
done
if [ -n "$bad" ]; then
  echo "FAIL: blocking work of the control task runs off the runtime's worker threads"
  echo "$bad" | sed 's/^/  /'
  failed=1
else
  echo "ok: blocking work of the control task runs off the runtime's worker threads"
fi

# validate.rs reads as one function per section: none over 80 lines.
longest=$(awk '
  /^(pub(\([a-z]+\))? )?fn / { start = NR; name = $2; infn = 1; next }
  infn && /^}/ { print NR - start + 1, name; infn = 0 }
' config/validate.rs | sort -rn | head -1)
if [ "${longest%% *}" -lt 80 ]; then
  echo "ok: the longest function of config/validate.rs has ${longest%% *} lines (${longest#* })"
else
  echo "FAIL: config/validate.rs has a function of ${longest%% *} lines (${longest#* })"
  failed=1
fi
# Tests wait by polling or on a paused clock: no sleep of a literal duration over 50 ms. (Test
# upstreams that play a slow server sleep for what the test asks, `/slow?ms=N`.)
long=$(grep -rnoE 'sleep\((std::time::)?Duration::from_(secs|millis)\([0-9_]+\)' ../tests/it |
  awk -F'[()]' '{ n = $3; gsub("_", "", n); ms = ($2 ~ /secs/) ? n * 1000 : n; if (ms > 50) print }')
if [ -n "$long" ]; then
  echo "FAIL: a test sleeps more than 50 ms"
  echo "$long" | sed 's/^/  /'
  failed=1
else
  echo "ok: no test sleeps more than 50 ms at a time"
fi
exit "$failed"
