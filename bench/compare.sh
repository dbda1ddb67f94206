#!/usr/bin/env bash
# Compares synod with etcd on this machine: the same load generator (`synod bench`,
# which speaks the etcd v3 API) runs the same workloads against a 3-member etcd
# cluster and a 3-member synod cluster, one cluster at a time, in alternating rounds;
# then each cluster is loaded with LOAD_KEYS keys and its memory and disk use are
# recorded. See bench/README.md for what each workload does and how to read the
# table.
#
# Quick smoke run:  CLIENTS="1 16" DURATION=2s ROUNDS=1 LOAD_KEYS=20000 bash bench/compare.sh
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

# ---- settings (environment overrides) ----------------------------------------
CLIENTS=${CLIENTS:-"1 16 128 512"}          # client counts, each a separate run
WORKLOADS=${WORKLOADS:-"put get-lin get-ser txn-cas lock lock-shared lease watch-latency"}
SYSTEMS=${SYSTEMS:-"etcd synod"}             # run order within a round: A B, A B, ...
DURATION=${DURATION:-10s}                    # measured time per run
WARMUP=${WARMUP:-2s}                         # unmeasured load before each run
ROUNDS=${ROUNDS:-2}                          # rounds per system; the table keeps the best
KEY_SPACE=${KEY_SPACE:-10000}                # keys the key workloads pick from
VALUE_SIZE=${VALUE_SIZE:-256}                # bytes per written value
CONNS=${CONNS:-}                             # --conns (empty: synod bench's default)
LOAD_KEYS=${LOAD_KEYS:-1000000}              # keys loaded for the footprint (0 skips it)
LOAD_CLIENTS=${LOAD_CLIENTS:-128}            # clients doing that load
LARGE_READ_KEYS=${LARGE_READ_KEYS:-200000}   # keys of 1 KiB for the large-reads run (0 skips it)
LARGE_READERS=${LARGE_READERS:-4}            # clients reading the whole key space over and over
RESULTS=${RESULTS:-$ROOT/bench/results/$(date +%Y%m%d-%H%M%S)}
SKIP_BUILD=${SKIP_BUILD:-0}                  # 1: use the synod binary as it is
SYNOD=${SYNOD:-$ROOT/target/release/synod}
ETCD=${ETCD:-/usr/bin/etcd}
ETCDCTL=${ETCDCTL:-/usr/bin/etcdctl}
READY_TIMEOUT_S=${READY_TIMEOUT_S:-60}       # how long a cluster may take to be healthy
CLK_TCK=$(getconf CLK_TCK)                    # units of /proc/PID/stat CPU times

# Neither server nor etcdctl may pick up settings from the caller's environment.
while read -r name; do unset "$name"; done < <(compgen -e | grep -E '^(ETCD|ETCDCTL|SYNOD)_' || true)

log() { printf '[compare %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---- processes: every one started is recorded and killed on exit -------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/synod-compare.XXXXXX")
declare -a STARTED_PIDS=()

stop_pids() {
  local pid deadline
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  deadline=$((SECONDS + 15))
  for pid in "$@"; do
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid did not stop on SIGTERM within 15 s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ "${#STARTED_PIDS[@]}" -gt 0 ]; then stop_pids "${STARTED_PIDS[@]}"; fi
  if [ "${KEEP_WORK:-0}" = 1 ]; then
    log "kept the clusters' data and logs in $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- dependencies -------------------------------------------------------------
install_dependencies() {
  local missing=()
  [ -x "$ETCD" ] || missing+=(etcd-server)
  [ -x "$ETCDCTL" ] || missing+=(etcd-client)
  command -v jq >/dev/null 2>&1 || missing+=(jq)
  [ "${#missing[@]}" -eq 0 ] && return
  [ "$(id -u)" -eq 0 ] || die "need root to install ${missing[*]} (apt-get install -y ${missing[*]})"
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  # The package may start a system etcd on 2379/2380; this script runs its own.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
    systemctl stop etcd || true
    systemctl disable etcd || true
  fi
  [ -x "$ETCD" ] || die "$ETCD is still missing after installing etcd-server"
}

# ---- ports: below the kernel's ephemeral range, and free when picked -----------
NEXT_PORT=$((20000 + RANDOM % 10000))
take_port() { # sets PORT
  local tries=0
  while :; do
    NEXT_PORT=$((NEXT_PORT + 1))
    [ "$NEXT_PORT" -lt 32000 ] || NEXT_PORT=20000
    tries=$((tries + 1))
    [ "$tries" -lt 12000 ] || die "no free loopback port found"
    if ! ss -Htan "( sport = :$NEXT_PORT )" 2>/dev/null | grep -q .; then
      PORT=$NEXT_PORT
      return
    fi
  done
}

# ---- clusters -------------------------------------------------------------------
# start_cluster SYSTEM TAG: starts 3 members in $WORK/TAG and waits until healthy.
# Sets MEMBER_PIDS, MEMBER_DIRS, MEMBER_LOGS and ENDPOINTS.
start_cluster() {
  local system=$1 tag=$2 i cluster="" binary
  local -a client_ports=() peer_ports=()
  MEMBER_PIDS=() MEMBER_DIRS=() MEMBER_LOGS=()
  for i in 0 1 2; do
    take_port; client_ports[i]=$PORT
    take_port; peer_ports[i]=$PORT
    cluster+="${cluster:+,}m$i=http://127.0.0.1:${peer_ports[i]}"
  done
  case $system in
    etcd) binary=$ETCD ;;
    synod) binary=$SYNOD ;;
    *) die "unknown system $system (SYSTEMS may hold etcd and synod)" ;;
  esac
  mkdir -p "$WORK/$tag"
  ENDPOINTS=""
  for i in 0 1 2; do
    local client_url="http://127.0.0.1:${client_ports[i]}"
    local peer_url="http://127.0.0.1:${peer_ports[i]}"
    local -a args=(--name "m$i" --data-dir "$WORK/$tag/m$i"
      --listen-client-urls "$client_url" --advertise-client-urls "$client_url"
      --listen-peer-urls "$peer_url" --initial-advertise-peer-urls "$peer_url"
      --initial-cluster "$cluster" --initial-cluster-token "bench-$tag"
      --initial-cluster-state new)
    if [ "$system" = synod ]; then args=(serve "${args[@]}"); fi
    "$binary" "${args[@]}" >"$WORK/$tag/m$i.log" 2>&1 &
    STARTED_PIDS+=($!)
    MEMBER_PIDS+=($!)
    MEMBER_DIRS+=("$WORK/$tag/m$i")
    MEMBER_LOGS+=("$WORK/$tag/m$i.log")
    ENDPOINTS+="${ENDPOINTS:+,}127.0.0.1:${client_ports[i]}"
  done
  wait_healthy "$system" "$tag"
}

wait_healthy() {
  local system=$1 tag=$2 deadline=$((SECONDS + READY_TIMEOUT_S)) i
  while :; do
    for i in 0 1 2; do
      if ! kill -0 "${MEMBER_PIDS[i]}" 2>/dev/null; then
        tail -n 30 "${MEMBER_LOGS[i]}" >&2 || true
        die "$system member m$i exited during startup (log above: ${MEMBER_LOGS[i]})"
      fi
    done
    if ETCDCTL_API=3 "$ETCDCTL" --endpoints="$ENDPOINTS" --dial-timeout=2s \
      --command-timeout=3s endpoint health >/dev/null 2>&1; then
      log "$system cluster $tag healthy at $ENDPOINTS"
      return
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      for i in 0 1 2; do tail -n 20 "${MEMBER_LOGS[i]}" >&2 || true; done
      die "$system cluster $tag not healthy within ${READY_TIMEOUT_S}s (logs above)"
    fi
    sleep 0.3
  done
}

stop_cluster() {
  local tag=$1 i pid
  stop_pids "${MEMBER_PIDS[@]}"
  local -a still=()
  for pid in "${STARTED_PIDS[@]}"; do
    case " ${MEMBER_PIDS[*]} " in *" $pid "*) ;; *) still+=("$pid") ;; esac
  done
  STARTED_PIDS=("${still[@]+"${still[@]}"}")
  mkdir -p "$RESULTS/logs"
  for i in 0 1 2; do
    tail -n 300 "${MEMBER_LOGS[i]}" >"$RESULTS/logs/$tag-m$i.log" 2>/dev/null || true
  done
  rm -rf "${WORK:?}/$tag"
}

# ---- benchmark runs -----------------------------------------------------------------
# The arguments `synod bench` gets for a workload name of this script.
workload_args() {
  case $1 in
    lock-shared) echo "lock --lock-mode shared" ;;
    put | get-lin | get-ser | txn-cas | lock | lease | watch-latency) echo "$1" ;;
    *) die "unknown workload $1" ;;
  esac
}

# members_cpu_ticks: CPU time (user + system, in clock ticks) the running members
# have used so far.
members_cpu_ticks() {
  local pid total=0 ticks
  for pid in "${MEMBER_PIDS[@]}"; do
    ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)
    total=$((total + ticks))
  done
  echo "$total"
}

# leader_endpoint: the client endpoint of the member that leads now (empty if
# none answers as leader).
leader_endpoint() {
  ETCDCTL_API=3 "$ETCDCTL" --endpoints="$ENDPOINTS" --dial-timeout=2s --command-timeout=5s \
    endpoint status -w json 2>/dev/null |
    jq -r '[.[] | select(.Status.leader == .Status.header.member_id) | .Endpoint] | first // empty' \
      2>/dev/null || true
}

# bench SYSTEM ROUND NAME CLIENTS VIA ENDPOINTS: one run against ENDPOINTS;
# appends its JSON line to raw.jsonl. VIA says which members the clients talk to:
# `all`, or for a one-client run `leader` or `follower`.
# Besides what synod bench reports, the line holds the CPU the three members used
# during the whole run (warm-up included) and, from it, their CPU per operation:
# that CPU over the operations done at the measured rate for the run's wall time.
bench() {
  local system=$1 round=$2 name=$3 clients=$4 via=$5 endpoints=$6 line ticks_before started
  local cpu_s wall_s
  local -a args
  read -r -a args <<<"$(workload_args "$name")"
  args+=(--endpoints "$endpoints" --clients "$clients" --duration "$DURATION"
    --warmup "$WARMUP" --key-space "$KEY_SPACE" --value-size "$VALUE_SIZE"
    --json --label "$system round $round")
  if [ -n "$CONNS" ]; then args+=(--conns "$CONNS"); fi
  ticks_before=$(members_cpu_ticks)
  started=$(date +%s.%N)
  if ! line=$("$SYNOD" bench "${args[@]}" 2>>"$RESULTS/bench-stderr.log"); then
    log "$system round $round: $name with $clients clients via $via FAILED (see $RESULTS/bench-stderr.log)"
    jq -cn --arg system "$system" --argjson round "$round" --arg name "$name" \
      --argjson clients "$clients" --arg via "$via" \
      '{system: $system, round: $round, name: $name, workload: $name, clients: $clients,
        via: $via, ops: 0, errors: 1, ops_per_sec: 0, p99_us: null,
        first_error: "synod bench failed"}' \
      >>"$RAW"
    return
  fi
  cpu_s=$(awk -v ticks=$(($(members_cpu_ticks) - ticks_before)) -v hz="$CLK_TCK" \
    'BEGIN { printf "%.3f", ticks / hz }')
  wall_s=$(awk -v from="$started" -v to="$(date +%s.%N)" 'BEGIN { printf "%.3f", to - from }')
  line=$(jq -c --arg system "$system" --argjson round "$round" --arg name "$name" \
    --arg via "$via" --argjson cpu_s "$cpu_s" --argjson wall_s "$wall_s" \
    '. + {system: $system, round: $round, name: $name, via: $via, members_cpu_s: $cpu_s,
          wall_s: $wall_s,
          members_cpu_us_per_op: (if .ops_per_sec > 0
            then $cpu_s * 1000000 / (.ops_per_sec * $wall_s) else null end)}' <<<"$line")
  echo "$line" >>"$RAW"
  jq -r '"    \(.name) clients=\(.clients) via \(.via): \(.ops_per_sec | floor) ops/s, p99 \(.p99_us) us, \(.errors) errors"
    + (if .first_error then " (first: \(.first_error))" else "" end)' <<<"$line" >&2
}

# Writes the key space once so the read workloads read keys that exist.
fill_keys() {
  "$SYNOD" bench put --endpoints "$ENDPOINTS" --clients 64 --total "$KEY_SPACE" \
    --key-space "$KEY_SPACE" --sequential-keys --value-size "$VALUE_SIZE" --json \
    --label fill >/dev/null 2>>"$RESULTS/bench-stderr.log" ||
    die "filling $KEY_SPACE keys failed (see $RESULTS/bench-stderr.log)"
}

# one_client SYSTEM ROUND NAME: the one-client run, made twice. One client talks to
# one member, and a request a follower takes costs a hop to the leader and back, so
# where the leader happens to be decides the result: the run is made once through
# the leader and once through a follower, on both systems alike.
one_client() {
  local system=$1 round=$2 name=$3 leader follower
  leader=$(leader_endpoint)
  if [ -z "$leader" ]; then
    log "$system round $round: no member answers as leader; $name with 1 client through any member"
    bench "$system" "$round" "$name" 1 all "$ENDPOINTS"
    return
  fi
  follower=$(tr ',' '\n' <<<"$ENDPOINTS" | grep -vx "$leader" | head -n 1)
  bench "$system" "$round" "$name" 1 leader "$leader"
  bench "$system" "$round" "$name" 1 follower "$follower"
}

run_round() {
  local system=$1 round=$2 tag="$1-round$2" name clients
  log "round $round: $system"
  start_cluster "$system" "$tag"
  fill_keys
  for name in $WORKLOADS; do
    for clients in $CLIENTS; do
      if [ "$clients" = 1 ]; then
        one_client "$system" "$round" "$name"
      else
        bench "$system" "$round" "$name" "$clients" all "$ENDPOINTS"
      fi
    done
  done
  stop_cluster "$tag"
}

# ---- footprint: memory and disk after loading LOAD_KEYS keys ------------------------
wait_members_agree() {
  local deadline=$((SECONDS + 120)) revisions
  while :; do
    revisions=$(ETCDCTL_API=3 "$ETCDCTL" --endpoints="$ENDPOINTS" --dial-timeout=2s \
      --command-timeout=5s endpoint status -w json 2>/dev/null |
      jq -r '[.[].Status.header.revision] | unique | length' 2>/dev/null || echo 0)
    [ "$revisions" = 1 ] && return
    [ "$SECONDS" -lt "$deadline" ] || { log "members still disagree on the revision; measuring anyway"; return; }
    sleep 0.5
  done
}

footprint() {
  local system=$1 tag="$1-footprint" i line rss anon disk
  log "footprint: $system, loading $LOAD_KEYS keys of $VALUE_SIZE bytes with $LOAD_CLIENTS clients"
  start_cluster "$system" "$tag"
  if ! line=$("$SYNOD" bench put --endpoints "$ENDPOINTS" --clients "$LOAD_CLIENTS" \
    --total "$LOAD_KEYS" --key-space "$LOAD_KEYS" --sequential-keys --key-prefix load/ \
    --value-size "$VALUE_SIZE" --json --label "$system load" 2>>"$RESULTS/bench-stderr.log"); then
    die "loading $LOAD_KEYS keys into $system failed (see $RESULTS/bench-stderr.log)"
  fi
  wait_members_agree
  sleep 2
  local -a rss_kb=() anon_kb=() disk_kb=()
  for i in 0 1 2; do
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/${MEMBER_PIDS[i]}/status")
    anon=$(awk '/^RssAnon:/ {print $2}' "/proc/${MEMBER_PIDS[i]}/status")
    disk=$(du -sk "${MEMBER_DIRS[i]}" | awk '{print $1}')
    rss_kb+=("$rss") anon_kb+=("$anon") disk_kb+=("$disk")
  done
  jq -cn --arg system "$system" --argjson keys "$LOAD_KEYS" --argjson value_size "$VALUE_SIZE" \
    --argjson load "$line" \
    --argjson rss "[${rss_kb[0]},${rss_kb[1]},${rss_kb[2]}]" \
    --argjson anon "[${anon_kb[0]},${anon_kb[1]},${anon_kb[2]}]" \
    --argjson disk "[${disk_kb[0]},${disk_kb[1]},${disk_kb[2]}]" \
    '{system: $system, keys: $keys, value_size: $value_size,
      load_ops_per_sec: $load.ops_per_sec, load_errors: $load.errors,
      rss_kb: $rss, rss_kb_total: ($rss | add), rss_anon_kb: $anon,
      rss_anon_kb_total: ($anon | add), disk_kb: $disk, disk_kb_total: ($disk | add)}' \
    >>"$FOOTPRINT"
  stop_cluster "$tag"
}

# ---- large reads: writes while clients read the whole key space -------------------
# put_once ENDPOINT DURATION LABEL: one client's puts for DURATION, as a JSON line.
put_once() {
  "$SYNOD" bench put --endpoints "$1" --clients 1 --duration "$2" --value-size "$VALUE_SIZE" \
    --json --label "$3" 2>>"$RESULTS/bench-stderr.log" || echo '{}'
}

large_reads() {
  local system=$1 tag="$1-large-reads" leader idle during i stop lists=0
  log "large reads: $system, $LARGE_READ_KEYS keys of 1 KiB, $LARGE_READERS readers"
  start_cluster "$system" "$tag"
  "$SYNOD" bench put --endpoints "$ENDPOINTS" --clients 64 --total "$LARGE_READ_KEYS" \
    --key-space "$LARGE_READ_KEYS" --sequential-keys --key-prefix bulk/ --value-size 1024 \
    --json --label "$system bulk load" >/dev/null 2>>"$RESULTS/bench-stderr.log" ||
    die "loading $LARGE_READ_KEYS keys into $system failed (see $RESULTS/bench-stderr.log)"
  wait_members_agree
  leader=$(leader_endpoint)
  [ -n "$leader" ] || die "no $system member answers as leader"
  idle=$(put_once "$leader" 5s "$system idle")
  # The readers run at the lowest priority and on the last core only, so that as
  # far as they can they leave the members the cores, as clients on other
  # machines would; each drops the answer it gets.
  local pin=()
  if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -gt 1 ]; then pin=(taskset -c "$(($(nproc) - 1))"); fi
  stop=$WORK/$tag/stop
  for i in $(seq 1 "$LARGE_READERS"); do
    (
      n=0
      while [ ! -e "$stop" ]; do
        ETCDCTL_API=3 "${pin[@]}" nice -n 19 "$ETCDCTL" --endpoints="$leader" --command-timeout=120s \
          get bulk/ --prefix -w protobuf >/dev/null 2>>"$RESULTS/bench-stderr.log" || true
        n=$((n + 1))
      done
      echo "$n" >"$WORK/$tag/reader-$i"
    ) &
    STARTED_PIDS+=($!)
  done
  sleep 1
  during=$(put_once "$leader" 10s "$system during reads")
  touch "$stop"
  wait "${STARTED_PIDS[@]: -$LARGE_READERS}" 2>/dev/null || true
  for i in $(seq 1 "$LARGE_READERS"); do lists=$((lists + $(cat "$WORK/$tag/reader-$i" 2>/dev/null || echo 0))); done
  jq -cn --arg system "$system" --argjson keys "$LARGE_READ_KEYS" --argjson lists "$lists" \
    --argjson idle "$idle" --argjson during "$during" \
    '{system: $system, keys: $keys, lists: $lists,
      idle_p99_us: $idle.p99_us, idle_max_us: $idle.max_us,
      during_p50_us: $during.p50_us, during_p99_us: $during.p99_us, during_max_us: $during.max_us,
      during_ops_per_sec: $during.ops_per_sec}' >>"$LARGE_READS"
  stop_cluster "$tag"
}

print_large_reads() {
  [ -s "$LARGE_READS" ] || return 0
  echo
  echo "Puts by one client through the leader, idle and while $LARGE_READERS clients read all"
  echo "$LARGE_READ_KEYS keys of 1 KiB over and over (lists = full reads finished meanwhile):"
  printf '%-6s %10s %10s %10s %10s %10s %10s %6s\n' system "idle p99" "idle max" "p50" "p99" "max" \
    "p99/idle" lists
  jq -r '[.system, .idle_p99_us, .idle_max_us, .during_p50_us, .during_p99_us, .during_max_us,
          .lists] | @tsv' "$LARGE_READS" |
    while IFS=$'\t' read -r system idle_p99 idle_max p50 p99 max lists; do
      printf '%-6s %10s %10s %10s %10s %10s %10s %6s\n' "$system" "$(ms "$idle_p99")" \
        "$(ms "$idle_max")" "$(ms "$p50")" "$(ms "$p99")" "$(ms "$max")" \
        "$(ratio "$p99" "$idle_p99")" "$lists"
    done
}

# ---- the table --------------------------------------------------------------------
# best SYSTEM NAME CLIENTS VIA -> "ops/s p99_us errors cpu_us" over the rounds: the
# highest ops/s and the lowest p99 (each the best of the rounds), the errors summed
# and the lowest CPU per operation.
best() {
  jq -s -r --arg system "$1" --arg name "$2" --argjson clients "$3" --arg via "$4" '
    [.[] | select(.system == $system and .name == $name and .clients == $clients
                  and (.via // "all") == $via)]
    | if length == 0 then "- - 0 -" else
        "\(map(.ops_per_sec) | max) \(map(.p99_us // empty) | min // "-") \(map(.errors) | add) \(
          map(.members_cpu_us_per_op // empty) | min // "-")"
      end' "$RAW"
}

ms() { # microseconds -> "1.23ms", or - if missing
  if [ "$1" = - ] || [ "$1" = null ]; then echo -; else awk -v us="$1" 'BEGIN {printf "%.2fms", us / 1000}'; fi
}

ratio() { # a / b, or - if either is missing or b is 0
  awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'
}

us() { # microseconds -> "123us", or - if missing
  if [ "$1" = - ] || [ "$1" = null ]; then echo -; else awk -v us="$1" 'BEGIN {printf "%.0fus", us}'; fi
}

# print_row NAME CLIENTS VIA LABEL: one line of the table, if either system ran it.
print_row() {
  local name=$1 clients=$2 via=$3 label=$4 e s eo ep ee ec so sp se sc note
  e=$(best etcd "$name" "$clients" "$via")
  s=$(best synod "$name" "$clients" "$via")
  read -r eo ep ee ec <<<"$e"
  read -r so sp se sc <<<"$s"
  if [ "$eo" = - ] && [ "$so" = - ]; then return; fi
  note=""
  [ "$ee" = 0 ] || note+="etcd: $ee errors; "
  [ "$se" = 0 ] || note+="synod: $se errors; "
  printf '%-14s %7s %12s %12s %7s %10s %10s %7s %9s %9s  %s\n' "$name" "$label" \
    "$(awk -v v="$eo" 'BEGIN { if (v == "-") print "-"; else printf "%.0f", v }')" \
    "$(awk -v v="$so" 'BEGIN { if (v == "-") print "-"; else printf "%.0f", v }')" \
    "$(ratio "$so" "$eo")" "$(ms "$ep")" "$(ms "$sp")" "$(ratio "$sp" "$ep")" \
    "$(us "$ec")" "$(us "$sc")" "$note"
}

print_table() {
  local name clients
  printf '%-14s %7s %12s %12s %7s %10s %10s %7s %9s %9s  %s\n' workload clients "etcd ops/s" \
    "synod ops/s" ratio "etcd p99" "synod p99" "p99 x" "etcd cpu" "synod cpu" notes
  for name in $WORKLOADS; do
    for clients in $CLIENTS; do
      if [ "$clients" = 1 ]; then
        print_row "$name" 1 leader "1 L"
        print_row "$name" 1 follower "1 F"
        # Through any member: only when no leader was found.
        print_row "$name" 1 all 1
      else
        print_row "$name" "$clients" all "$clients"
      fi
    done
  done
}

print_footprint() {
  [ -s "$FOOTPRINT" ] || return 0
  echo
  echo "Footprint after loading $LOAD_KEYS keys of $VALUE_SIZE bytes (3 members; MiB):"
  printf '%-6s %10s  %-26s %8s %9s  %-26s %8s\n' system "load op/s" "RSS per member" "RSS sum" \
    "anon sum" "disk per member" "disk sum"
  jq -r '[.system, (.load_ops_per_sec | floor),
          (.rss_kb | map(. / 1024 | floor | tostring) | join(" / ")), (.rss_kb_total / 1024 | floor),
          (.rss_anon_kb_total / 1024 | floor),
          (.disk_kb | map(. / 1024 | floor | tostring) | join(" / ")), (.disk_kb_total / 1024 | floor)]
         | @tsv' "$FOOTPRINT" |
    while IFS=$'\t' read -r system load rss rss_sum anon disk disk_sum; do
      printf '%-6s %10s  %-26s %8s %9s  %-26s %8s\n' "$system" "$load" "$rss" "$rss_sum" \
        "$anon" "$disk" "$disk_sum"
    done
}

# ---- main ------------------------------------------------------------------------
main() {
  install_dependencies
  if [ "$SKIP_BUILD" != 1 ]; then
    log "building synod (release)"
    cargo build --release -p synod
  fi
  [ -x "$SYNOD" ] || die "$SYNOD is missing (build it, or set SYNOD=path)"
  for name in $WORKLOADS; do workload_args "$name" >/dev/null; done

  mkdir -p "$RESULTS"
  RAW=$RESULTS/raw.jsonl
  FOOTPRINT=$RESULTS/footprint.jsonl
  LARGE_READS=$RESULTS/large-reads.jsonl
  : >"$RAW"
  : >"$FOOTPRINT"
  : >"$LARGE_READS"
  {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "etcd: $("$ETCD" --version | head -n 1)"
    echo "synod: $("$SYNOD" --version) ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown))"
    echo "cpus: $(nproc), memory: $(awk '/^MemTotal:/ {print $2 " kB"}' /proc/meminfo)"
    echo "CLIENTS=$CLIENTS WORKLOADS=$WORKLOADS SYSTEMS=$SYSTEMS DURATION=$DURATION"
    echo "WARMUP=$WARMUP ROUNDS=$ROUNDS KEY_SPACE=$KEY_SPACE VALUE_SIZE=$VALUE_SIZE CONNS=${CONNS:-default}"
    echo "LOAD_KEYS=$LOAD_KEYS LOAD_CLIENTS=$LOAD_CLIENTS"
    echo "LARGE_READ_KEYS=$LARGE_READ_KEYS LARGE_READERS=$LARGE_READERS"
  } >"$RESULTS/settings.txt"
  log "results go to $RESULTS"

  local round system
  for round in $(seq 1 "$ROUNDS"); do
    for system in $SYSTEMS; do
      run_round "$system" "$round"
    done
  done
  if [ "$LOAD_KEYS" -gt 0 ]; then
    for system in $SYSTEMS; do footprint "$system"; done
  fi
  if [ "$LARGE_READ_KEYS" -gt 0 ]; then
    for system in $SYSTEMS; do large_reads "$system"; done
  fi

  {
    echo "synod vs etcd: 3 members each on 127.0.0.1, $DURATION per run after $WARMUP warm-up,"
    echo "best of $ROUNDS round(s) (highest ops/s, lowest p99). ratio = synod/etcd ops/s"
    echo "(above 1: synod faster); p99 x = synod p99 / etcd p99 (below 1: synod lower)."
    echo "cpu = CPU time of the three members per operation (lowest of the rounds)."
    echo "1 L / 1 F: one client talking to the leader / to a follower."
    echo
    print_table
    print_footprint
    print_large_reads
  } | tee "$RESULTS/summary.txt"
  log "raw results: $RAW; summary: $RESULTS/summary.txt"
}

main "$@"
