// Package compute runs eBPF programs against storage: the compute bdev, a
// virtual device over many base namespaces that scans them with a verified
// program and returns only what matched.
//
// The program side — loading, verification, the interpreter, maps and the C
// ABI — lives in the sub-packages engine, verifier and abi. This package fans a
// compiled program out over (namespace, LBA range) targets: per target it
// picks an engine (an offload to a compute-capable controller that can reach
// the data — see offload.go — or a host compute core) and streams matches
// back to the caller with statistics on the bytes that moved.
//
// # How the work spreads
//
// Every reactor of the scan's poller group runs one host worker. Each target
// has a cursor from which the workers take its chunks, one atomic add per
// chunk; a worker keeps several chunks in flight, takes them from one target
// until it is handed out and then moves to the next target that has chunks
// left (the workers start spread over the targets). So one large namespace
// keeps every reactor busy, many small ones do too, and no reactor idles
// while a chunk is left. The cursors are all the workers write in common:
// engine instances, counters and matches are per worker and merged at the
// end (Stats.Cores shows what each reactor did). Offloaded targets are
// driven the same way: per compute device, one job per reactor (as many as
// the chunks keep busy), each through its own queue pair, takes chunks from
// every target offloaded to that device. A target that several compute
// devices reach goes to all of them: their jobs take its chunks from its one
// cursor, so one large namespace is split by ranges over the devices as it
// is over the reactors, and a faster device takes more. A job's chunk slots
// (device memory and a memory range set each) serve its targets in turn, so
// a scan takes of a device what its reactors keep in flight (no more than
// its share of the chunks keeps busy), however many targets it has, and
// gives it all back when it ends.
//
// Both kinds of job are one loop (job.go: scanLoop) that takes chunks,
// delivers their matches and finishes, abandons and tears down the same
// way; what differs (a host worker reads a chunk and runs the program, an
// offload job has the device copy, execute and hand back the match list)
// sits behind jobSteps.
//
// Stats.Targets says where each target ran and, when PlaceAuto kept it on
// the host, why (no compute device, none that reaches the namespace, a
// partial last block, an overlap, the device's memory taken).
//
// A scan that fails to start, is cancelled or ends stops its workers before
// it frees anything: reads in flight complete first, then the channels
// close (an error closing one is returned) and the buffers are freed.
//
// # What a match is
//
// A per-block filter (SEC("bpfblk/filter")) returns non-zero for a matching
// block; the match is that block. A scanner (SEC("bpfblk/scan")) calls
// bpfblk_emit(ctx, off) with a byte offset from the start of its chunk; the
// match is the block holding that byte, and the offset within the block is
// kept. An emitted offset outside the chunk is a program fault of that chunk
// (one in the chunk's overlap, Options.Overlap, belongs to the next chunk
// and is left to it).
//
// # Nothing is lost silently
//
// Every value a run emits reaches OnMatch. Emit buffers start at one value
// per block and grow: a host run whose buffer filled is run again with room
// for all it emitted (the engine counts the values it refused), and an
// offloaded run whose match list did not fit its output range is fetched
// from device memory and run again on the host core that drives it. A run
// is repeated only if the program has no writable maps (repeating it would
// count twice); such a program that emits gets the whole bound at once.
// Values past Options.EmitCap, or that a run that cannot be repeated could
// not place, are counted in Stats.Lost and listed in Stats.Losses by
// target, blocks and where they ran: a scan with losses is incomplete.
package compute
