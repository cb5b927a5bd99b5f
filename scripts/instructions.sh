#!/bin/bash
# Instructions per packet of the pipeline's established path, and per new
# connection, counted by callgrind: nearly the same figure on every run of
# a build, whatever else the machine is doing, so a change's effect shows
# where timings are noise. (Not exactly the same: work paced by the clock,
# such as a connection's last-seen stamp written when the clock has
# moved, follows the emulation's speed; runs of one build differ by a few
# instructions a packet and a few tens a new connection.)
# Two runs of BenchmarkPipelineCounted/udp, then /tcp, with different b.N;
# the difference of their totals over the difference of their packets
# leaves out the set-up both share.
#   scripts/instructions.sh [test binary]   (default: builds ./dataplane)
set -euo pipefail
command -v valgrind >/dev/null || { echo "instructions.sh: needs valgrind (apt-get install valgrind)" >&2; exit 2; }
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
		--callgrind-out-file="$tmp/cg.out" "$bin" -test.run '^$' \
		-test.bench "$1" -test.benchtime "${2}x" 2>&1 |
		sed -n 's/.*Collected : //p'
}
a=64000 b=320000
for proto in udp tcp; do
	x=$(count "^BenchmarkPipelineCounted\$/^$proto\$" $a) y=$(count "^BenchmarkPipelineCounted\$/^$proto\$" $b)
	[ -n "$x" ] && [ -n "$y" ] || { echo "instructions.sh: callgrind gave no count" >&2; exit 1; }
	echo "pipeline $proto/1000 established: $(( (y - x) / (b - a) )) instructions per packet (callgrind, BenchmarkPipelineCounted/$proto)"
done
# New connections: BenchmarkNewConnections makes b.N connections, and its
# set-up (each connection's template frame, the table) grows with b.N, so
# this count includes that set-up's share.
x=$(count '^BenchmarkNewConnections$' 20000) y=$(count '^BenchmarkNewConnections$' 100000)
[ -n "$x" ] && [ -n "$y" ] || { echo "instructions.sh: callgrind gave no count" >&2; exit 1; }
echo "new connections: $(( (y - x) / 80000 )) instructions per connection, the bench's set-up included (callgrind, BenchmarkNewConnections)"
