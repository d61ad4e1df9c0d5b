// Package filters holds bpfblk's example eBPF filters (C sources compiled with
// clang) and their objects embedded with bpf2go:
//
//   - pattern.c: blocks containing a byte pattern (pattern_filter with plain
//     loads, pattern_memmem with the bpfblk_memmem helper, pattern_xdp for the
//     Linux kernel)
//   - records.c: byte offsets of records whose field lies in a range
//   - aggregate.c: count and sum of a record field, in total and per key
//
// Regenerate with `go generate ./filters` (needs clang and llvm-strip);
// check-generated.sh verifies that the committed objects match the sources.
package filters

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -no-global-types -output-stem pattern Pattern pattern.c -- -I. -Wall -Werror
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -no-global-types -output-stem records Records records.c -- -I. -Wall -Werror
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -no-global-types -output-stem aggregate Aggregate aggregate.c -- -I. -Wall -Werror
