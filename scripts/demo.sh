#!/usr/bin/env bash
# make demo: build xnat, run it between throwaway network namespaces with
# real traffic, show what xnatctl sees, fill the connection table and show
# the "table full, dropping packet" event and the table_full counter (exit 1
# if either is missing), and remove everything it created.
#
#   insideA: a0 10.0.1.2/24 ── ina 10.0.1.1/24 ┐
#                                              ├ xnat (ip_forward=0) out 192.0.2.1/24 ── s0 192.0.2.2/24 :server
#   insideB: b0 10.0.2.2/24 ── inb 10.0.2.1/24 ┘
#
# Needs root, ip (iproute2), ethtool, sysctl (procps) and go; make demo
# installs the packages first (scripts/deps.sh). Runs in well under a minute.
set -euo pipefail

cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo: needs root (network namespaces, XDP)" >&2; exit 1; }
for cmd in ip ethtool sysctl go; do
  command -v "$cmd" >/dev/null || { echo "demo: needs $cmd: run scripts/deps.sh as root (make demo does)" >&2; exit 1; }
done

MAX_CONNS=${MAX_CONNS:-64}
[[ "$MAX_CONNS" =~ ^[0-9]+$ ]] && [ "$MAX_CONNS" -ge 16 ] && [ "$MAX_CONNS" -le 4096 ] ||
  { echo "demo: MAX_CONNS=$MAX_CONNS: a number from 16 to 4096" >&2; exit 2; }
start=$(date +%s)
tmp=$(mktemp -d /tmp/xnat-demo.XXXXXX)
ns="xnatdemo-$$"
A="$ns-insideA" B="$ns-insideB" X="$ns-xnat" S="$ns-server"
pids=()

cleanup() {
  local rc=$?
  set +e
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  for n in "$A" "$B" "$X" "$S"; do ip netns del "$n" 2>/dev/null; done
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
fail() {
  echo "demo: FAILED: $*" >&2
  echo "demo: xnatd's log:" >&2
  sed 's/^/  /' "$tmp/xnatd.log" >&2
  exit 1
}
nsx() { local n=$1; shift; ip netns exec "$n" "$@"; }

say "building xnatd, xnatctl and the demo's traffic tool"
go build -o "$tmp/bin/" ./cmd/xnatd ./cmd/xnatctl
go build -o "$tmp/bin/demotraffic" ./scripts/demotraffic
PATH="$tmp/bin:$PATH"
ctl() { xnatctl --socket "$tmp/xnat.sock" "$@"; }

say "creating namespaces $A, $B, $X, $S"
for n in "$A" "$B" "$X" "$S"; do ip netns add "$n"; nsx "$n" ip link set lo up; done
ip link add a0 netns "$A" type veth peer name ina netns "$X"
ip link add b0 netns "$B" type veth peer name inb netns "$X"
ip link add out netns "$X" type veth peer name s0 netns "$S"
nsx "$A" ip addr add 10.0.1.2/24 dev a0
nsx "$B" ip addr add 10.0.2.2/24 dev b0
nsx "$X" ip addr add 10.0.1.1/24 dev ina
nsx "$X" ip addr add 10.0.2.1/24 dev inb
nsx "$X" ip addr add 192.0.2.1/24 dev out
nsx "$S" ip addr add 192.0.2.2/24 dev s0
for pair in "$A a0" "$B b0" "$S s0" "$X ina" "$X inb" "$X out"; do
  set -- $pair
  nsx "$1" ip link set "$2" up
done
# The hosts sending into xnat compute their checksums (veth would leave
# them to an offload that XDP never sees).
for pair in "$A a0" "$B b0" "$S s0"; do
  set -- $pair
  nsx "$1" ethtool -K "$2" tx off >/dev/null
done
nsx "$A" ip route add default via 10.0.1.1
nsx "$B" ip route add default via 10.0.2.1
# xnat forwards, not its kernel: a packet the kernel got would be lost.
nsx "$X" sysctl -qw net.ipv4.ip_forward=0
# The server knows nothing of the inside networks: it can only answer
# the translated address. xnat knows its neighbours from the start (it
# would otherwise ask its kernel to resolve them, dropping the first
# packets as no_neighbour meanwhile).
for h in "$A a0 ina 10.0.1.2" "$B b0 inb 10.0.2.2" "$S s0 out 192.0.2.2"; do
  set -- $h
  mac=$(nsx "$1" cat "/sys/class/net/$2/address")
  nsx "$X" ip neigh replace "$4" lladdr "$mac" dev "$3" nud permanent
done

cat >"$tmp/rules.v4" <<RULES
*filter
:FORWARD ACCEPT [0:0]
-A FORWARD -m conntrack --ctstate INVALID -j DROP
COMMIT
*nat
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -s 10.0.0.0/16 -o out -j MASQUERADE
COMMIT
RULES

say "starting xnatd (MASQUERADE out of 'out', nf_conntrack_max $MAX_CONNS)"
ip netns exec "$X" xnatd --inside ina --inside inb --outside out --rules "$tmp/rules.v4" \
  --capacity 4096 --max-conns "$MAX_CONNS" --socket "$tmp/xnat.sock" >"$tmp/xnatd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  [ -S "$tmp/xnat.sock" ] && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$tmp/xnatd.log" >&2; exit 1; }
  sleep 0.1
done
[ -S "$tmp/xnat.sock" ] || { echo "demo: xnatd did not start" >&2; cat "$tmp/xnatd.log" >&2; exit 1; }
grep -E 'msg="(xdp attached|af_xdp socket|flow table)"' "$tmp/xnatd.log" | sed 's/^/  xnatd: /'

ip netns exec "$S" demotraffic serve 192.0.2.2 7000 8000 >/dev/null &
pids+=($!)
sleep 0.3

say "traffic: ping, UDP and TCP from both inside hosts"
nsx "$A" demotraffic ping 192.0.2.2 3
nsx "$A" demotraffic udp 192.0.2.2:7000 20
nsx "$B" demotraffic udp 192.0.2.2:7000 20
nsx "$A" demotraffic tcp 192.0.2.2:8000 1000000
nsx "$B" demotraffic tcp 192.0.2.2:8000 1000000

say "xnatctl conntrack -L"
ctl conntrack -L
say "xnatctl iptables -t nat -L -n -v"
ctl iptables -t nat -L -n -v
say "xnatctl iptables -L FORWARD -n -v"
ctl iptables -L FORWARD -n -v

# A full table makes room for a new connection by evicting one that is not
# ASSURED (early_drop); only when every entry is ASSURED does it refuse the
# new connection: "nf_conntrack: table full, dropping packet", counted
# table_full. The ping and the short UDP flows are not ASSURED (a UDP flow
# becomes so after replies over 2 s): they go first, and held TCP
# connections, ASSURED once established, fill the table.
say "filling the table with ASSURED connections up to nf_conntrack_max"
ctl sysctl net.netfilter.nf_conntrack_max
ctl conntrack -D -p icmp
ctl conntrack -D -p udp
for round in 1 2 3; do
  have=$(ctl conntrack -C)
  [ "$have" -lt "$MAX_CONNS" ] || break
  out="$tmp/hold$round"
  ip netns exec "$A" demotraffic burst 192.0.2.2:8000 $((MAX_CONNS - have)) 10m >"$out" 2>&1 &
  pids+=($!)
  for _ in $(seq 300); do [ -s "$out" ] && break; sleep 0.1; done
  cat "$out"
done
have=$(ctl conntrack -C)
assured=$(ctl conntrack -L 2>/dev/null | grep -c '\[ASSURED\]' || true)
echo "table: $have/$MAX_CONNS connections, $assured of them ASSURED"
[ "$have" -eq "$MAX_CONNS" ] && [ "$assured" -eq "$have" ] ||
  fail "the table did not fill with ASSURED connections"

NEW=16
say "$NEW more new connections into the full table"
# Each is refused (its SYN and the retransmission dropped), so the tool
# reports none opened; that is the point.
nsx "$B" demotraffic burst 192.0.2.2:8000 "$NEW" 0s 2>&1 | grep -v '^demotraffic: no connection opened$' || true
# The control API's monitor reads the counters four times a second.
for _ in $(seq 50); do
  ctl events | grep -q 'table full, dropping packet' && break
  sleep 0.1
done

say "xnatctl stats"
ctl stats

say "table full: xnatctl events, the table_full counter, xnatd's log"
events=$(ctl events)
table_full=$(ctl --json stats | tr -d ' \t\n' | grep -o '"name":"table_full","value":[0-9]*' | head -n 1 | grep -o '[0-9]*$' || true)
echo "xnatctl events:"
printf '%s\n' "$events" | sed 's/^/  /'
echo "xnatctl stats:"
ctl stats | grep -E '^conntrack ' | sed 's/^/  /'
ctl stats | grep -oE 'table_full +[0-9.]+( k| M)?' | sed 's/^/  drops       /'
echo "xnatctl conntrack -S:"
ctl conntrack -S | sed 's/^/  /'
echo "xnatd's log:"
grep -E 'kind=table_full' "$tmp/xnatd.log" | sed 's/^/  /' || true
grep -q 'table full, dropping packet' <<<"$events" || fail "xnatctl events shows no table-full event"
[ "${table_full:-0}" -gt 0 ] || fail "the table_full counter is ${table_full:-missing}"
grep -q 'kind=table_full' "$tmp/xnatd.log" || fail "xnatd logged no table-full event"
full_event=$(grep 'table full, dropping packet' <<<"$events" | head -n 1)
echo
echo "table full: event  $full_event"
echo "table full: counter table_full $table_full (packets of refused new connections: SYNs and their retransmissions)"

say "cleaning up"
kill -TERM "${pids[0]}"
wait "${pids[0]}" || true
grep -E 'msg=stopped' "$tmp/xnatd.log" | sed 's/^/  xnatd: /' || true
echo "demo done in $(( $(date +%s) - start )) s; every namespace and process it made is removed on exit"
