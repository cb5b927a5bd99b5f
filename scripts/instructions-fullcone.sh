#!/bin/bash
# Instructions a packet on the established path and a new connection, with
# MASQUERADE and with FULLCONENAT beside it, counted by callgrind as in
# scripts/instructions.sh (two runs of each benchmark with different b.N;
# the difference of their totals over the difference of their packets).
# New connections stay below 64,512 (the pool's ports): every FULLCONENAT
# connection of the bed is its own inside endpoint and takes a port of its
# own.
#   scripts/instructions-fullcone.sh [test binary]   (default: builds ./dataplane)
set -euo pipefail
command -v valgrind >/dev/null || { echo "instructions-fullcone.sh: needs valgrind (apt-get install valgrind)" >&2; exit 2; }
bin=${1:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -z "$bin" ]; then
	bin=$tmp/dataplane.test
	go test -c -o "$bin" ./dataplane
fi
count() { # benchmark pattern, b.N
	GOGC=off GODEBUG=asyncpreemptoff=1 GOMAXPROCS=1 valgrind --tool=callgrind \
		--callgrind-out-file="$tmp/cg.out" "$bin" -test.run '^$' \
		-test.bench "$1" -test.benchtime "${2}x" 2>&1 |
		sed -n 's/.*Collected : //p'
}
for nat in MASQUERADE FULLCONENAT; do
	x=$(count "^BenchmarkPipelineCountedNAT\$/^$nat\$" 64000) y=$(count "^BenchmarkPipelineCountedNAT\$/^$nat\$" 320000)
	[ -n "$x" ] && [ -n "$y" ] || { echo "instructions-fullcone.sh: callgrind gave no count" >&2; exit 1; }
	echo "established udp/1000 $nat: $(( (y - x) / 256000 )) instructions per packet (callgrind, BenchmarkPipelineCountedNAT/$nat)"
done
for nat in MASQUERADE FULLCONENAT; do
	x=$(count "^BenchmarkNewConnectionsNAT\$/^$nat\$" 20000) y=$(count "^BenchmarkNewConnectionsNAT\$/^$nat\$" 50000)
	[ -n "$x" ] && [ -n "$y" ] || { echo "instructions-fullcone.sh: callgrind gave no count" >&2; exit 1; }
	echo "new connections $nat: $(( (y - x) / 30000 )) instructions per connection, the bench's set-up included (callgrind, BenchmarkNewConnectionsNAT/$nat)"
done
