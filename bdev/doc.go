// Package bdev is bpfblk's block-device layer, after SPDK's bdev: a Bdev (name,
// block size, capacity, supported I/O types) served by a backend module — an
// NVMe namespace, RAM (malloc), or nothing at all (null) — and stacked
// virtual bdevs.
//
// Ownership: a Desc is an open handle (read-only or read-write, optionally
// with the exclusive claim a virtual bdev takes on its base bdevs). Each
// goroutine that does I/O — normally a reactor of package poller — makes its
// own Channel from a Desc. A Channel owns a fixed pool of IO objects and the
// backend's per-core queue (for NVMe, one queue pair) and is never shared, so
// submitting, polling and completing take no lock and allocate nothing.
//
// Completion: every submitted I/O completes exactly once, through its
// callback (Read, Write and the rest: func(*IO) and an argument) or its
// Completer (ReadTagged, WriteTagged: Complete(tag, result, err)), from
// Channel.Poll — never from inside the submit call. The tagged form is the
// cheaper one: on an NVMe bdev a read or write of one command takes no IO,
// and its completion goes from the queue pair to the Completer. An I/O
// larger than the backend's transfer limit is split into children, a few in
// flight at a time; an I/O the device has no room for waits in the channel
// and is resubmitted as completions free room, but for a tagged read or
// write of the NVMe fast path, which is refused with ErrNoIO instead.
// ErrNoIO (the pool is empty, or that refusal) is back-pressure: poll, then
// submit again.
//
// Sync wraps a Desc and a reactor in blocking ReadAt/WriteAt calls for simple
// programs.
package bdev
