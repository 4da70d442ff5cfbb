#!/usr/bin/env bash
# Side-by-side benchmark of peace-tracker and etcd on this machine, in one run.
# Installs Debian's etcd-server (and protobuf-compiler, which the etcd client
# crate's build needs) if missing, starts both on loopback with fresh data
# dirs, runs every shape against both with the same client (peace-bench),
# stops both, and writes docs/BENCHMARKS.md.
#
# Sizes can be scaled down for a quick look: WRITES=5000 READS=10000 FILL=100000 scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."

WRITES=${WRITES:-50000}
READS=${READS:-100000}
CLIENTS=${CLIENTS:-64}
WATCHERS=${WATCHERS:-1000}
RATE=${RATE:-100}
DURATION=${DURATION:-10}
MANY_WATCHERS=${MANY_WATCHERS:-10000}
FILL=${FILL:-1000000}
WRITE_MASK=revision
WATCH_MASK=revision,clause_id,party_id,clause_version,kind,reason,commit_time
export WRITE_MASK WATCH_MASK
PEACE_ADDR=127.0.0.1:50061
ETCD_ADDR=127.0.0.1:2379

need() { command -v "$1" >/dev/null 2>&1; }
if ! need etcd || ! need protoc; then
  echo "installing etcd-server and protobuf-compiler from Debian..."
  apt-get update -qq && apt-get install -y -qq etcd-server protobuf-compiler >/dev/null
fi
cargo build --release --features etcd --bins

work=$(mktemp -d)
results="$work/results.jsonl"
PEACE_PID=""; ETCD_PID=""
cleanup() {
  [ -n "$PEACE_PID" ] && kill "$PEACE_PID" 2>/dev/null || true
  [ -n "$ETCD_PID" ] && kill "$ETCD_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# Waits (up to ${3:-30} s) for a log file to contain a line.
wait_for_line() {
  for _ in $(seq $(( ${3:-30} * 100 ))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.01; done
  echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; return 1
}

start_peace() {
  RUST_LOG=info ./target/release/peace-tracker --listen "$PEACE_ADDR" --data-dir "$1" >"$work/peace.log" 2>&1 &
  PEACE_PID=$!
  wait_for_line "$work/peace.log" "peace-tracker serving"
}
stop_peace() { kill -TERM "$PEACE_PID"; wait "$PEACE_PID" || true; PEACE_PID=""; }

bench() { ./target/release/peace-bench "$@" | tee /dev/stderr | tail -n 1 >>"$results"; }

echo "== starting etcd and peace-tracker"
etcd --name bench --data-dir "$work/etcd" \
  --listen-client-urls "http://$ETCD_ADDR" --advertise-client-urls "http://$ETCD_ADDR" \
  --listen-peer-urls http://127.0.0.1:2390 --initial-advertise-peer-urls http://127.0.0.1:2390 \
  --initial-cluster bench=http://127.0.0.1:2390 >"$work/etcd.log" 2>&1 &
ETCD_PID=$!
wait_for_line "$work/etcd.log" "ready to serve client requests"
start_peace "$work/peace"
idle_rss=$(rss_kib "$PEACE_PID")
etcd_idle_rss=$(rss_kib "$ETCD_PID")

for target in peace-tracker etcd; do
  addr=$PEACE_ADDR; [ "$target" = etcd ] && addr=$ETCD_ADDR
  echo "== $target"
  bench write --target "$target" --addr "$addr" --clients "$CLIENTS" --requests "$WRITES"
  bench read --target "$target" --addr "$addr" --clients "$CLIENTS" --requests "$READS"
  bench watch --target "$target" --addr "$addr" --watchers "$WATCHERS" --rate "$RATE" --duration "$DURATION"
  if [ "$target" = peace-tracker ]; then
    # The same shapes with answers trimmed by read_mask (AIP-157): a write
    # answering with its revision number, like etcd's put response header,
    # and watch events carrying the change's metadata without the clause
    # snapshots.
    bench write --target "$target" --addr "$addr" --clients "$CLIENTS" --requests "$WRITES" --read-mask "$WRITE_MASK"
    bench watch --target "$target" --addr "$addr" --watchers "$WATCHERS" --rate "$RATE" --duration "$DURATION" --read-mask "$WATCH_MASK"
  fi
done

echo "== memory per watcher at $MANY_WATCHERS watchers"
before=$(rss_kib "$PEACE_PID")
# The server allows 1,024 streams per connection: spread the watchers.
./target/release/peace-bench watch --addr "$PEACE_ADDR" --watchers "$MANY_WATCHERS" --rate 10 --duration 10 \
  --connections $(( MANY_WATCHERS / 1000 + 1 )) \
  >"$work/many.out" 2>"$work/many.err" &
many=$!
wait_for_line "$work/many.err" "watchers ready" 120
during=$(rss_kib "$PEACE_PID")
wait "$many"
tail -n 1 "$work/many.out" >>"$results"
per_watcher=$(( (during - before) * 1024 / MANY_WATCHERS ))

echo "== cold start and size with $FILL more revisions"
./target/release/peace-bench fill --addr "$PEACE_ADDR" --revisions "$FILL" | tail -n 1 >>"$results"
stop_ns=$(date +%s%N)
stop_peace   # a clean stop writes the shutdown checkpoint
stop_ms=$(( ($(date +%s%N) - stop_ns) / 1000000 ))
data_size=$(du -sk "$work/peace" | cut -f1)
start_ns=$(date +%s%N)
start_peace "$work/peace"
cold_ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))
head_rev=$(grep "peace-tracker serving" "$work/peace.log" | sed -E 's/.*revision=([0-9]+).*/\1/')
stop_peace

python3 - "$results" "$idle_rss" "$etcd_idle_rss" "$per_watcher" "$data_size" "$cold_ms" "$head_rev" "$stop_ms" <<'PY'
import json, platform, subprocess, sys, datetime
path, idle, etcd_idle, per_watcher, size_kib, cold_ms, head, stop_ms = sys.argv[1:]
rows = [json.loads(l) for l in open(path) if l.strip().startswith("{")]
def get(bench, target, mask=""):
    return next((r for r in rows if r["bench"] == bench and r["target"] == target
                 and r.get("read_mask", "") == mask
                 and (bench != "watch" or r["watchers"] != int(__import__("os").environ.get("MANY_WATCHERS", "10000")))), None)
write_mask, watch_mask = __import__("os").environ["WRITE_MASK"], __import__("os").environ["WATCH_MASK"]
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
etcd_v = subprocess.run(["etcd", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
out = []
out.append("# Benchmarks\n")
out.append(f"One run of `scripts/bench.sh` on {datetime.date.today()}: peace-tracker and etcd on the same machine, "
           "both on loopback with fresh data dirs, measured by the same client (`peace-bench`). "
           "Client and servers share the machine's cores, so absolute figures are low; the ratios are what to read.\n")
out.append(f"- machine: {platform.machine()}, {cpu}, {subprocess.run(['nproc'],capture_output=True,text=True).stdout.strip()} cores\n"
           f"- etcd: {etcd_v} (Debian `etcd-server`), default settings (fsync on every commit)\n"
           f"- peace-tracker: release build, `--durability sync` (fsync before every acknowledgement)\n")
out.append("\n## Side by side\n")
out.append("| shape | peace-tracker | etcd | ratio | target |\n|---|---|---|---|---|")
w, we = get("write", "peace-tracker"), get("write", "etcd")
r, re_ = get("read", "peace-tracker"), get("read", "etcd")
v, ve = get("watch", "peace-tracker"), get("watch", "etcd")
def f(x, k, d=0): return f"{x[k]:,.{d}f}" if x else "n/a"
def ratio(a, b, k): return f"{a[k]/b[k]:.2f}x" if a and b and b[k] else "n/a"
out.append(f"| durable writes, {w['clients'] if w else '?'} in flight: ops/s | {f(w,'ops_per_sec')} | {f(we,'ops_per_sec')} | {ratio(w,we,'ops_per_sec')} | >= 1.5x |")
out.append(f"| durable writes: p99 ms | {f(w,'p99_ms',2)} | {f(we,'p99_ms',2)} | {ratio(w,we,'p99_ms')} | <= 1x |")
out.append(f"| reads, {r['clients'] if r else '?'} in flight: ops/s | {f(r,'ops_per_sec')} | {f(re_,'ops_per_sec')} | {ratio(r,re_,'ops_per_sec')} | >= 2x |")
out.append(f"| reads: p99 ms | {f(r,'p99_ms',2)} | {f(re_,'p99_ms',2)} | {ratio(r,re_,'p99_ms')} | |")
if v:
    out.append(f"| watch, {v['watchers']} watchers at {v['rate']} writes/s: p50 ms sent->delivered | {f(v,'p50_ms',2)} | {f(ve,'p50_ms',2)} | {ratio(v,ve,'p50_ms')} | |")
    out.append(f"| watch: p99 ms sent->delivered | {f(v,'p99_ms',2)} | {f(ve,'p99_ms',2)} | {ratio(v,ve,'p99_ms')} | <= 5 ms and <= etcd |")
    out.append(f"| watch: missing / out of order | {v['missing']} / {v['out_of_order']} | {ve['missing'] if ve else 'n/a'} / {ve['out_of_order'] if ve else 'n/a'} | | 0 |")
wm, vm = get("write", "peace-tracker", write_mask), get("watch", "peace-tracker", watch_mask)
if wm or vm:
    out.append("\nThe same shapes with peace-tracker's answers trimmed by `read_mask` (AIP-157). etcd's put "
               "already answers with a header only; its watch events carry the key, the ~220-byte value and "
               "three revision numbers, without the previous value.\n")
    out.append("| shape | peace-tracker | etcd | ratio | target |\n|---|---|---|---|---|")
    out.append(f"| durable writes answering `{write_mask}`: ops/s | {f(wm,'ops_per_sec')} | {f(we,'ops_per_sec')} | {ratio(wm,we,'ops_per_sec')} | >= 1.5x |")
    out.append(f"| durable writes answering `{write_mask}`: p99 ms | {f(wm,'p99_ms',2)} | {f(we,'p99_ms',2)} | {ratio(wm,we,'p99_ms')} | <= 1x |")
    if vm:
        out.append(f"| watch, events of `{watch_mask}`: p50 ms | {f(vm,'p50_ms',2)} | {f(ve,'p50_ms',2)} | {ratio(vm,ve,'p50_ms')} | |")
        out.append(f"| watch, events of `{watch_mask}`: p99 ms | {f(vm,'p99_ms',2)} | {f(ve,'p99_ms',2)} | {ratio(vm,ve,'p99_ms')} | <= 5 ms and <= etcd |")
        out.append(f"| watch, masked: missing / out of order | {vm['missing']} / {vm['out_of_order']} | | | 0 |")
out.append("\n## peace-tracker alone\n")
out.append("| measure | value | target |\n|---|---|---|")
out.append(f"| idle RSS (seeded store) | {int(idle)/1024:.1f} MiB (etcd: {int(etcd_idle)/1024:.1f} MiB) | <= 30 MiB |")
out.append(f"| memory per watcher at {__import__('os').environ.get('MANY_WATCHERS','10000')} watchers | {int(per_watcher)/1024:.1f} KiB | <= 8 KB |")
fill = next((x for x in rows if x["bench"] == "fill"), None)
if fill:
    out.append(f"| fill rate (Apply batches of 1,000) | {fill['revisions_per_sec']:,} revisions/s | |")
out.append(f"| data dir size at {int(head):,} revisions | {int(size_kib)/1024:.0f} MiB | |")
out.append(f"| clean stop right after the fill (flush and shutdown checkpoint) | {int(stop_ms)} ms | |")
out.append(f"| cold start at {int(head):,} revisions (process start to serving) | {int(cold_ms)} ms | <= 1 s |")
out.append("\n## Raw results (the last line of each peace-bench run)\n\n```")
out.extend(json.dumps(x) for x in rows)
out.append("```\n")
out.append("## Commands\n\n```sh\nscripts/bench.sh    # everything below, in one run\n"
           "peace-bench write --addr 127.0.0.1:50061 --clients 64 --requests 50000\n"
           "peace-bench write --target etcd --addr 127.0.0.1:2379 --clients 64 --requests 50000\n"
           "peace-bench read  --addr 127.0.0.1:50061 --clients 64 --requests 100000\n"
           "peace-bench watch --addr 127.0.0.1:50061 --watchers 1000 --rate 100 --duration 10\n"
           f"peace-bench write --addr 127.0.0.1:50061 --clients 64 --requests 50000 --read-mask {write_mask}\n"
           f"peace-bench watch --addr 127.0.0.1:50061 --watchers 1000 --rate 100 --duration 10 --read-mask {watch_mask}\n"
           "peace-bench fill  --addr 127.0.0.1:50061 --revisions 1000000\n```\n")
try:
    out.append(open("docs/benchmark-reading.md").read())
except FileNotFoundError:
    pass
open("docs/BENCHMARKS.md", "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
echo "wrote docs/BENCHMARKS.md"
