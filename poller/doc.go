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
// # Waiting on the kernel
//
// A poller whose work arrives from the kernel — an io_uring's completions,
// a socket's data — registers a descriptor that becomes readable then
// (Reactor.AddWaitFD: the ring's eventfd, the socket), as SPDK's fd_group
// does for its interrupt mode. A reactor with such descriptors parks in
// epoll_wait on them (edge-triggered, with an eventfd of its own that
// messages and Wake write, and its park limit as timeout) instead of on
// its timer, so I/O in flight no longer waits out a park. Without
// descriptors it parks as before. Wake stays a flag read while the
// reactor runs: a sender writes the eventfd only when it finds the reactor
// parked, once per park.
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
