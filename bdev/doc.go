// Package bdev is bpfblk's block-device layer, after SPDK's bdev: a Bdev (name,
// block size, capacity, supported I/O types) served by a backend module — an
// NVMe namespace, RAM (malloc), or nothing at all (null) — and stacked
// virtual bdevs.
//
// Ownership: a Desc is an open handle (read-only or read-write, optionally
// with the exclusive claim a virtual bdev takes on its base bdevs). Each
// goroutine that does I/O — normally a reactor of package poller — makes its
// own Channels from Descs: NewChannelOn(owner, depth) on the owner's
// goroutine, where owner is the reactor (any Owner: a comparable value whose
// OnReactor says whether the caller runs on it). A Channel owns a fixed pool
// of IO objects and is never shared; the channels of one owner share the
// backend's per-thread queue — for NVMe bdevs one I/O queue pair per
// controller, whatever the number of namespaces, created by the owner's
// first channel on the controller and deleted with its last — and are all
// used from the owner's goroutine, so submitting, polling and completing
// take no lock and allocate nothing. NewChannel makes a channel that shares
// nothing (a queue pair of its own). A controller with fewer queue pairs
// than owners fails the extra owners' channels with an error naming the
// controller and both numbers.
//
// Polling: Channel.Poll reaps the shared queue pair for all of the owner's
// channels on it; when each channel polls once per reactor iteration, the
// queue pair is processed once per iteration. Close takes no more I/O and
// waits for the channel's I/Os in flight, which complete from it; after it
// returns nil nothing of the channel runs again.
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
