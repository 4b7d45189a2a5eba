#!/usr/bin/env bash
# The module import graph of src/, from the paths the code names (`use` lines and inline paths
# alike: `crate::a::b`, `super::x`, `self::x`, and a parent's `child::x`), with one node per
# file (`config/load.rs` is `config::load`, `config/mod.rs` is `config`). Checks what
# ARCHITECTURE.md promises:
#   1. no cycle between modules;
#   2. nothing under `config` imports anything of weir outside `config` but `tls` and
#      `proxy::{matching, filters, affinity, health}` (leaves: checked to import nothing of weir).
# Files, not top-level modules, because `proxy` holds two layers: its pool layer (`pool`, `conns`,
# `body`, `request`, `forward`, `mirror`, `retry`, `split`) sits below `snapshot`, which holds
# pools, and its request layer (`proxy`, `router`, `listener`) above it. Tests inside a file
# (`mod tests`) are left out. Exits 1 on a violation.
#
# Usage: scripts/deps.sh            check, and print the top-level module edges
#        scripts/deps.sh --files    print the file edges
#        scripts/deps.sh --edges    print the top-level module edges
set -euo pipefail
cd "$(dirname "$0")/../src"

# The module path of a source file: config/load.rs -> config::load, config/mod.rs -> config.
module_of() {
  local f=${1%.rs}
  f=${f%/mod}
  echo "${f//\//::}"
}

# The module a path such as config::validate::Config names: its longest prefix that is a file.
resolve() {
  local path=$1
  while [ -n "$path" ]; do
    local file=${path//:://}
    if [ -f "$file.rs" ] || [ -f "$file/mod.rs" ]; then
      echo "$path"
      return
    fi
    [[ $path == *::* ]] || return 0
    path=${path%::*}
  done
}

# The text of FILE without comments and without its inline test module. Inside another inline
# module (`mod defaults { .. }`, assumed to run to the end of the file), `super` is the file.
code_of() {
  sed -e 's#^[[:space:]]*//.*##' -e 's#[[:space:]]//.*##' \
    -e '/^#\[cfg(test)\]/,$d' \
    -e '/^[[:space:]]*\(pub \)\{0,1\}mod [a-z_]* {/,$ s/super::/self::/g' "$1"
}

# Every path FILE names, written from the crate root: `crate::`, `super::` and `self::` paths
# with `{a, b::c}` groups expanded, and paths that start with one of the module's children.
paths_of() {
  local file=$1 module parent dir
  module=$(module_of "$file")
  parent=${module%::*}
  if [ "$parent" = "$module" ]; then parent=""; fi
  code_of "$file" | tr '\n' ' ' |
    grep -oE '\b(crate|super|self)(::[A-Za-z_][A-Za-z0-9_]*)*(::\{[^{}]*\}|::\*)?' |
    { grep -F '::' || true; } | sed 's/::\*$//' |
    while read -r p; do
      local head=${p%%::\{*} items="" base
      if [[ $p == *'::{'* ]]; then items=${p#*::\{}; items=${items%\}}; fi
      case $head in
        crate*) base=${head#crate} ;;
        super*) base=$parent${head#super} ;;
        self*) base=$module${head#self} ;;
      esac
      base=${base#::}
      if [ -z "$items" ]; then
        echo "$base"
      else
        tr ',' '\n' <<<"$items" | sed 's/^ *//; s/ *$//; s/ as .*//' | while read -r item; do
          if [ -z "$item" ]; then continue; fi
          if [ "$item" = self ]; then echo "$base"; else echo "${base:+$base::}$item"; fi
        done
      fi
    done
  # A child named without `self::` (`use control::X;`, `split::choose(..)`).
  dir=${module//:://}
  if [ -d "$dir" ]; then
    for child in $(find "$dir" -maxdepth 2 \( -name '*.rs' -path "$dir/*" \) | sed "s#^$dir/##; s#/mod.rs##; s#\.rs##" | grep -v /); do
      [ "$child" = mod ] && continue
      # `grep -q` would stop reading at the first match, and under pipefail the SIGPIPE it
      # leaves behind would turn a match into a miss now and then: read everything instead.
      if code_of "$file" | grep -vE '^\s*(pub(\(.*\))? )?mod ' | grep -E "(^|[^:A-Za-z0-9_])$child::" >/dev/null; then
        echo "$module::$child"
      fi
    done
  fi
}

file_edges() {
  find . -name '*.rs' ! -name main.rs ! -name lib.rs | sed 's#^\./##' | sort | while read -r file; do
    local from
    from=$(module_of "$file")
    paths_of "$file" | while read -r p; do
      local to
      to=$(resolve "$p")
      if [ -n "$to" ] && [ "$to" != "$from" ]; then echo "$from $to"; fi
    done
  done | sort -u
}

EDGES=$(file_edges)
MODULE_EDGES=$(sed -E 's/::[a-z_0-9:]*//g' <<<"$EDGES" | awk '$1 != $2' | sort -u)
case ${1:-} in
  --files) echo "$EDGES"; exit 0 ;;
  --edges) echo "$MODULE_EDGES"; exit 0 ;;
esac

failed=0
# tsort names the members of each loop it finds on stderr.
if ! loops=$(tsort <<<"$EDGES" 2>&1 >/dev/null); then
  echo "cycles between modules:"
  echo "$loops" | sed 's/^tsort: /  /'
  failed=1
fi
# Besides `tls`, config may use the compilers of a route's gateway fields and the health-check
# specs (issue 23), which validation runs once: they are leaves too, importing nothing of weir.
LEAVES='^(tls|proxy::(matching|filters|affinity|health))$'
upward=$(awk -v leaves="$LEAVES" '$1 ~ /^config(::|$)/ && $2 !~ /^config(::|$)/ && $2 !~ leaves' <<<"$EDGES")
if [ -n "$upward" ]; then
  echo "config imports modules above it:"
  echo "$upward" | sed 's/^/  /'
  failed=1
fi
not_leaves=$(awk '$1 ~ /^proxy::(matching|filters|affinity|health)$/' <<<"$EDGES")
if [ -n "$not_leaves" ]; then
  echo "a gateway compiler that config uses imports weir modules (it must stay a leaf):"
  echo "$not_leaves" | sed 's/^/  /'
  failed=1
fi
echo "top-level module edges (A B: A imports B):"
echo "$MODULE_EDGES" | sed 's/^/  /'
if [ "$failed" = 0 ]; then
  echo "ok: $(wc -l <<<"$EDGES") imports between $(tr ' ' '\n' <<<"$EDGES" | sort -u | wc -l) modules, no cycle, nothing from config upward"
fi
exit "$failed"
