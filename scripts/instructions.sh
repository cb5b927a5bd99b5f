#!/bin/bash
# Instructions per packet of the pipeline's established path, and per new
# connection, counted by callgrind: nearly the same figure on every run of
# a build, whatever else the machine is doing, so a change's effect shows
# where timings are noise. (Not exactly the same: work paced by the clock,
# such as a connection's last-seen stamp written when the clock has
# moved, follows the emulation's speed; runs of one build differ by a few
# instructions a packet and a few tens a new connection.)
# Each figure is two runs of a benchmark with different b.N: the
# difference of their totals over the difference of their packets (or
# connections) leaves out the set-up both share.
#   scripts/instructions.sh [--fullcone] [--impl go|avx2|auto] [test binary]
#   (default: the Go flow table, the portable reference; builds ./dataplane)
# Without --fullcone: BenchmarkPipelineCounted/udp and /tcp, then
# BenchmarkNewConnections. With --fullcone: MASQUERADE and FULLCONENAT
# side by side, established (BenchmarkPipelineCountedNAT, UDP) and new
# connections (BenchmarkNewConnectionsNAT); those stay below 64,512 (the
# pool's ports): every FULLCONENAT connection of the bed is its own inside
# endpoint and takes a port of its own.
set -euo pipefail
command -v valgrind >/dev/null || { echo "instructions.sh: needs valgrind (apt-get install valgrind)" >&2; exit 2; }
fullcone=
impl=go
while [ $# -gt 0 ]; do
	case "$1" in
	--fullcone) fullcone=1; shift ;;
	--impl) impl=$2; shift 2 ;;
	*) break ;;
	esac
done
bin=${1:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -z "$bin" ]; then
	bin=$tmp/dataplane.test
	go test -c -o "$bin" ./dataplane
fi
count() { # benchmark pattern, b.N
	# Go's preemption signals upset callgrind: one P, no async preemption.
	GOGC=off GODEBUG=asyncpreemptoff=1 GOMAXPROCS=1 valgrind --tool=callgrind \
		--callgrind-out-file="$tmp/cg.out" "$bin" -test.run '^$' -impl "$impl" \
		-test.bench "$1" -test.benchtime "${2}x" 2>&1 |
		sed -n 's/.*Collected : //p'
}
per() { # benchmark pattern, smaller b.N, larger b.N: instructions per b.N
	local x y
	x=$(count "$1" "$2") y=$(count "$1" "$3")
	[ -n "$x" ] && [ -n "$y" ] || { echo "instructions.sh: callgrind gave no count" >&2; exit 1; }
	echo $(( (y - x) / ($3 - $2) ))
}
if [ -z "$fullcone" ]; then
	for proto in udp tcp; do
		n=$(per "^BenchmarkPipelineCounted\$/^$proto\$" 64000 320000)
		echo "pipeline $proto/1000 established ($impl): $n instructions per packet (callgrind, BenchmarkPipelineCounted/$proto)"
	done
	# New connections: BenchmarkNewConnections makes b.N connections, and its
	# set-up (each connection's template frame, the table) grows with b.N, so
	# this count includes that set-up's share.
	n=$(per '^BenchmarkNewConnections$' 20000 100000)
	echo "new connections ($impl): $n instructions per connection, the bench's set-up included (callgrind, BenchmarkNewConnections)"
else
	for nat in MASQUERADE FULLCONENAT; do
		n=$(per "^BenchmarkPipelineCountedNAT\$/^$nat\$" 64000 320000)
		echo "established udp/1000 $nat ($impl): $n instructions per packet (callgrind, BenchmarkPipelineCountedNAT/$nat)"
	done
	for nat in MASQUERADE FULLCONENAT; do
		n=$(per "^BenchmarkNewConnectionsNAT\$/^$nat\$" 20000 50000)
		echo "new connections $nat ($impl): $n instructions per connection, the bench's set-up included (callgrind, BenchmarkNewConnectionsNAT/$nat)"
	done
fi
