// Package compute runs eBPF programs against storage: the compute bdev, a
// virtual device over many base namespaces that scans them with a verified
// program and returns only what matched.
//
// The program side — loading, verification, the interpreter, maps and the C
// ABI — lives in the sub-packages engine, verifier and abi. This package fans a
// compiled program out over (namespace, LBA range) targets: per target it
// picks an engine (an offload to a compute-capable controller that can reach
// the data — see offload.go — or a host compute core), keeps several chunks in flight per
// namespace, runs namespaces in parallel across reactors, and streams matches
// back to the caller with statistics on the bytes that moved.
//
// # What a match is
//
// A per-block filter (SEC("bpfblk/filter")) returns non-zero for a matching
// block; the match is that block. A scanner (SEC("bpfblk/scan")) calls
// bpfblk_emit(ctx, off) with a byte offset from the start of its chunk; the
// match is the block holding that byte, and the offset within the block is
// kept. An emitted offset outside the chunk is a program fault of that chunk.
package compute
