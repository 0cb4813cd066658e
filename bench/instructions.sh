#!/usr/bin/env bash
# Instructions per `test-token` request of a `twofold` binary, counted by callgrind: the same
# count for the same binary, inputs and environment whatever else the machine is doing, so two
# builds compare on a shared machine where a timed run would not.
#
#   bench/instructions.sh target/release/twofold [requests]
#
# It starts the binary in the embedded mode under callgrind, signs up and logs in one user,
# warms up with the same requests, zeroes the counters, sends `requests` (default 2000)
# keep-alive requests with curl, and prints the instructions counted divided by the requests;
# it fails instead if any of them was not answered 200.
# With INSTRUCTIONS_PROFILE=FILE it also keeps the profile of those requests in FILE.
set -euo pipefail
binary=${1:?usage: bench/instructions.sh path/to/twofold [requests]}
requests=${2:-2000}
for tool in valgrind callgrind_control curl python3; do
  command -v "$tool" >/dev/null || { echo "instructions.sh: $tool is missing" >&2; exit 1; }
done
work=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
cleanup() {
  [ -n "${server:-}" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
env -i PATH="$PATH" TWOFOLD_ADDR="127.0.0.1:$port" TWOFOLD_IP_RATE_LIMIT=0 ${INSTRUCTIONS_ENV:-} \
  valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" "$binary" serve \
  >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 600); do
  curl -sf "$base/health/live" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -sf "$base/health/live" >/dev/null || { cat "$work/server.log" >&2; exit 1; }
email="bench-$RANDOM@example.com"
password="correct horse battery staple"
curl -sf -X POST "$base/api/v1/auth/signup" -H 'content-type: application/json' \
  -d "{\"email\":\"$email\",\"password\":\"$password\",\"full_name\":\"Bench User\",\"tfa_enabled\":false,\"device\":null}" >/dev/null
token=$(curl -sf -X POST "$base/api/v1/auth/login" \
  --data-urlencode "username=$email" --data-urlencode "password=$password" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
# One curl for all requests: one keep-alive connection.
urls() { for _ in $(seq 1 "$1"); do printf 'url = "%s"\noutput = "/dev/null"\n' "$base/api/v1/auth/test-token"; done; }
urls 200 >"$work/warm.cfg"
urls "$requests" >"$work/run.cfg"
curl -s -H "Authorization: Bearer $token" -K "$work/warm.cfg"
callgrind_control -z "$server" >/dev/null 2>&1
curl -s -H "Authorization: Bearer $token" -K "$work/run.cfg" -w '%{http_code}\n' >"$work/statuses"
callgrind_control -d "$server" >/dev/null 2>&1
# A refused token costs far fewer instructions than an accepted one: count only runs where
# every request was answered 200.
answered=$(grep -c '^200$' "$work/statuses" || true)
if [ "$answered" != "$requests" ]; then
  echo "instructions.sh: $answered of $requests requests answered 200 ($(sort "$work/statuses" | uniq -c | tr -s ' \n' ' '))" >&2
  exit 1
fi
sleep 1
total=$(cat "$work"/callgrind.out.* | sed -n 's/^totals: *\([0-9]*\).*/\1/p' | sort -n | tail -1)
python3 -c "print(f'{$total / $requests:.0f} instructions per request ({$requests} requests, $binary)')"
# Keep the profile for callgrind_annotate if asked to.
if [ -n "${INSTRUCTIONS_PROFILE:-}" ]; then
  cp "$(ls -S "$work"/callgrind.out.* | head -1)" "$INSTRUCTIONS_PROFILE"
fi
