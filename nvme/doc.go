// Package nvme is bpfblk's userspace NVMe driver, written once and run over
// any Transport: the emulated controllers of nvme/mock in CI and real or QEMU
// controllers through nvme/vfio.
//
// It holds the spec types (SQE, CQE, the register map, Identify structures,
// log pages, status codes as StatusError with the spec's names), and the
// driver:
//
//   - NewController resets and initialises a controller (CAP.TO-bounded
//     disable/enable, CSTS.CFS checks, admin queue, Identify, I/O command set
//     selection, Number of Queues, namespace discovery).
//   - Controller.NewQueuePair creates an I/O queue pair owned by one
//     goroutine. Read, Write, Flush, WriteZeroes, Deallocate, Copy and the raw
//     Submit write the SQE at once and return; a full queue returns
//     ErrQueueFull. Process rings the SQ doorbell once per batch, reaps
//     completions by phase tag and calls each command's Completer exactly
//     once. Data buffers are caller-provided DMA memory; PRPs and PRP lists
//     (from a per-queue preallocated pool) are built from IOVAs, and
//     transfers larger than the controller's MDTS are split.
//   - Every command has a timeout. An expired command is aborted; if it is
//     still outstanding a timeout later, or the controller reports CSTS.CFS,
//     the controller is reset. Each queue pair then recreates its queues on its
//     own goroutine and completes every outstanding command with an error
//     (ErrTimeout, ErrReset, ErrControllerFatal), never silently dropping one.
//   - A controller that reports CSTS.CFS while idle is reset too: every queue
//     pair's periodic timeout scan reads CSTS even with nothing outstanding,
//     an admin command first resets a controller with fatal status (or with
//     an admin queue full of commands it never answered), an admin command
//     that fails on fatal status resets it, and Controller.Check is the same
//     health check for a caller polling a controller without queue pairs.
//
// The hot path (submission, Process, completion) allocates nothing, takes
// no lock and writes nothing but the queue pair's own state, which is padded
// off the cache lines of its neighbours.
package nvme
