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
//
// The hot path (submission, Process, completion) allocates nothing and takes
// no lock.
package nvme
