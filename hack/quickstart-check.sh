#!/usr/bin/env bash
# Runs the README's quick start exactly as written, the way a newcomer would:
# a fresh `git clone` of this repository (its committed HEAD), then every
# command of the first ```sh block under "## Quick start" in the clone's
# README.md, in order, each under a timeout. While a command runs, the
# script watches its output for the demo banner's Bookinfo URL and requires
# productpage to answer 200 through the ingress gateway. It fails if a
# command fails or if no command ever served productpage.
#
# Non-interactive: DEMO_FLAGS (read by `make demo`) defaults to
# "--base-port 0 --exit-after 15s", so the demo picks free ports (it can run
# next to other meshes on a shared machine) and stops by itself once checked.
#
# Environment:
#   QUICKSTART_REPO     repository to clone (default: the one holding this script)
#   QUICKSTART_TIMEOUT  seconds each command may take (default 900)
#   QUICKSTART_ALL=1    also run `make test` from the block (the whole suite,
#                       20+ minutes); by default it is listed but skipped
#   QUICKSTART_KEEP=1   keep the clone and logs
#   DEMO_FLAGS          override the flags above, e.g. "--exit-after 15s" to
#                       use the fixed ports 8000/8080/20001 like a newcomer
#
# `hack/quickstart-check.sh --list [README]` only prints the commands it would
# run (test/e2e checks the README this way in `make test`).
set -euo pipefail

# quickstart_commands README: the first ```sh block after the "## Quick
# start" heading, comments and blank lines dropped.
quickstart_commands() {
  awk '
    /^## Quick start/ { inqs = 1; next }
    inqs && /^## / { exit }
    inqs && !inblock && /^```sh/ { inblock = 1; next }
    inblock && /^```/ { exit }
    inblock { print }
  ' "$1" | sed -e 's/[[:space:]]*#.*$//' -e 's/^[[:space:]]*//' | { grep -v '^$' || true; }
}
if [ "${1:-}" = --list ]; then
  quickstart_commands "${2:-$(dirname "$0")/../README.md}"
  exit 0
fi

here=$(cd "$(dirname "$0")/.." && pwd)
repo=${QUICKSTART_REPO:-$here}
limit=${QUICKSTART_TIMEOUT:-900}
export DEMO_FLAGS=${DEMO_FLAGS:---base-port 0 --exit-after 15s}

work=$(mktemp -d /tmp/weft-quickstart-XXXXXX)
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM -- "-$pid" 2>/dev/null || true; fi
  if [ "${QUICKSTART_KEEP:-}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

echo "== git clone $repo"
git clone -q "$repo" "$work/weft"
cd "$work/weft"
echo "   at $(git log --oneline -1)"

mapfile -t cmds < <(quickstart_commands README.md)
if [ ${#cmds[@]} -eq 0 ]; then
  echo "FAIL: README.md has no \`\`\`sh block under '## Quick start'"; exit 1
fi
printf '   quick start commands:\n'; printf '     %s\n' "${cmds[@]}"

served=0
n=0
for cmd in "${cmds[@]}"; do
  n=$((n + 1))
  if [ "$cmd" = "make test" ] && [ "${QUICKSTART_ALL:-}" != 1 ]; then
    echo "== [$n] $cmd: skipped (the whole test suite; QUICKSTART_ALL=1 runs it)"
    continue
  fi
  log="$work/cmd$n.log"
  echo "== [$n] $cmd   (timeout ${limit}s, DEMO_FLAGS=\"$DEMO_FLAGS\", log $log)"
  start=$(date +%s)
  setsid timeout -k 10 "$limit" bash -c "$cmd" >"$log" 2>&1 &
  pid=$!
  url="" ok=0
  while kill -0 "$pid" 2>/dev/null; do
    if [ -z "$url" ]; then
      url=$(grep -oP '^\s+Bookinfo\s+\Khttp\S+' "$log" || true)
      [ -n "$url" ] && echo "   demo ready after $(( $(date +%s) - start ))s: $url"
    fi
    if [ -n "$url" ] && [ $ok = 0 ]; then
      code=$(curl -s -o "$work/productpage.html" -w '%{http_code}' --max-time 5 "$url" || true)
      if [ "$code" = 200 ] && grep -q 'Book Details' "$work/productpage.html" 2>/dev/null; then
        ok=1; served=$((served + 1))
        echo "   GET $url -> 200 through the ingress gateway"
      fi
    fi
    sleep 0.5
  done
  rc=0; wait "$pid" || rc=$?
  pid=""
  echo "   exit $rc after $(( $(date +%s) - start ))s"
  if [ $rc -ne 0 ]; then
    echo "FAIL: '$cmd' exited $rc; last lines of its output:"; tail -40 "$log"; exit 1
  fi
  if [ -n "$url" ] && [ $ok = 0 ]; then
    echo "FAIL: '$cmd' printed $url but productpage never answered 200 (last code ${code:-none})"; tail -40 "$log"; exit 1
  fi
done
if [ $served = 0 ]; then
  echo "FAIL: no quick start command served productpage through the gateway"; exit 1
fi
echo "OK: the README quick start works from a fresh clone"
