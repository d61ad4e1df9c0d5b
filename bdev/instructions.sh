#!/usr/bin/env bash
# instructions.sh [QD...]: instructions per I/O of the raw queue pair, of the
# bdev's Read (callback) and of its ReadTagged (Completer) in
# BenchmarkNullQD<QD>, counted by callgrind (valgrind), and cost-% as the
# benchmark defines it (1 - raw/bdev) for each bdev form. With SECOND=1 it
# adds both forms on a channel that is the second of its owner on the
# queue pair (bdev-second, tagged-second), which takes no fast path. Counts do
# not depend on the host or on what else runs on it, so they show changes of
# a few instructions that timing cannot. Default QDs: 128 32 1.
#
# Only the benchmark's run loop is counted (--toggle-collect), on one thread
# (GOMAXPROCS=1: callgrind's toggle is per thread, and a goroutine that moved
# would be counted in part), without asynchronous preemption (callgrind
# trips over its signals).
set -euo pipefail
cd "$(dirname "$0")"
command -v valgrind >/dev/null || { echo "instructions.sh: needs valgrind" >&2; exit 2; }
n=200000
bin=$(mktemp -d)/bdev.test
trap 'rm -rf "$(dirname "$bin")"' EXIT
go test -c -o "$bin" .
[ $# -gt 0 ] || set -- 128 32 1
sides="queuepair bdev tagged"
[ "${SECOND:-0}" = 1 ] && sides="$sides bdev-second tagged-second"
printf '%-5s %10s %10s %8s %10s %8s' QD raw bdev cost-% tagged cost-%
[ "${SECOND:-0}" = 1 ] && printf ' %10s %8s %10s %8s' bdev-2nd cost-% tagged-2nd cost-%
echo
for qd in "$@"; do
	for side in $sides; do
		case $side in
		queuepair) fn='github.com/bpfblk/bpfblk/bdev_test.(*rawResubmit).run' ;;
		bdev*) fn='github.com/bpfblk/bpfblk/bdev_test.(*bdevResubmit).run' ;;
		tagged*) fn='github.com/bpfblk/bpfblk/bdev_test.(*taggedResubmit).run' ;;
		esac
		refs=$(GOMAXPROCS=1 GODEBUG=asyncpreemptoff=1 valgrind --tool=callgrind \
			--callgrind-out-file=/dev/null "--toggle-collect=$fn" \
			"$bin" -test.run '^$' -test.bench "NullQD$qd\$/$side\$" -test.benchtime ${n}x 2>&1 |
			awk '/refs:/ {gsub(",", "", $4); print $4}')
		eval "${side//-/_}=\$refs"
	done
	awk -v qd="$qd" -v r="$queuepair" -v b="$bdev" -v t="$tagged" -v n=$n \
		'BEGIN { printf "%-5s %10.1f %10.1f %8.1f %10.1f %8.1f", qd, r/n, b/n, 100*(b-r)/b, t/n, 100*(t-r)/t }'
	if [ "${SECOND:-0}" = 1 ]; then
		awk -v r="$queuepair" -v b="$bdev_second" -v t="$tagged_second" -v n=$n \
			'BEGIN { printf " %10.1f %8.1f %10.1f %8.1f", b/n, 100*(b-r)/b, t/n, 100*(t-r)/t }'
	fi
	echo
done
