// Package poller is bpfblk's per-core runtime, in the manner of SPDK's reactors
// and lib/thread: one reactor per selected core, each a goroutine locked to an
// OS thread and pinned to its core, looping over registered pollers and a
// message ring.
//
// # Ownership
//
// Every object that does I/O is owned by exactly one reactor and touched only
// from that reactor's goroutine: pollers, NVMe queue pairs, bdev channels and
// their pooled I/O objects. Nothing on those paths takes a lock. Work crosses
// cores only as messages: Reactor.SendMsg puts a Message on the target
// reactor's bounded lock-free MPSC ring, and the target runs it in its loop,
// draining messages in batches of up to 64. A full ring is back-pressure:
// SendMsg returns ErrRingFull at once and the sender decides what to do; it
// never blocks.
//
// # The loop
//
// Each iteration drains messages, runs every-iteration pollers, then runs the
// timed pollers whose period has elapsed. A poller returns Busy when it did
// work and Idle otherwise; the reactor counts both per poller and per
// iteration (ReactorStats). When an iteration finds no work the reactor follows
// its IdleStrategy: spin, then yield, then park until a message arrives, a
// timed poller is due, or the park limit passes.
//
// # Shutdown
//
// Group.Stop closes every reactor's ring, so later sends fail with ErrStopped;
// each reactor keeps looping until every message sent before the close has run,
// then its goroutine ends, and Stop returns once all have ended. A message is
// therefore either delivered (Send returned nil) or refused (Send returned an
// error); none is dropped silently.
//
// # Rings
//
// SPSC and MPSC are generic bounded rings with power-of-two capacity,
// cache-line-padded indices and no allocation after construction. They are
// usable on their own, for example for completions handed from one core to
// another.
package poller
