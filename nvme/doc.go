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
//
// # Computational Programs and Subsystem Local Memory: departures from the drafts
//
// compute.go defines the CP (CSI 4) and SLM (CSI 3) command sets after the
// public drafts (libnvme, SPDK forks, FEMU; the TP4091/TP4131 texts are not
// public). Where bpfblk does not follow them, it is listed here, with why;
// the driver and the emulated controller (nvme/mock) agree on every row.
//
//	item                      drafts                         bpfblk                                 why
//	Execute Program DLEN      CDW4                           CDW4 (aligned)                         -
//	Execute Program NUMR      CDW3: ranges used              ignored: the whole set; range 0 is     the drafts give no meaning to the ranges'
//	                                                         input, range 1 output                  roles; bpfblk fixes them (compute.go)
//	Execute Program data ptr  CDW6-9: host data              unused                                 input and output are device memory only
//	"return map state"        not defined                    CDW15 bit 0 (ExecFlagState): write     eBPF maps live in the device; the drafts
//	                                                         the merged maps to range 1             have no command to read program state
//	CP/SLM statuses           no public values               0x40-0x48, command specific            placeholders, named in compute.go, until
//	                                                         (Invalid Program ... Max Active)       the ratified values are public
//	CP Identify Namespace     MAXACT, MAXMEMRS, MAXMEMR,     Slots u16@0, MaxActive u16@2,          field offsets are not public; MAXPB is
//	(CNS 05h, CSI 4)          MAXPB (MiB), LPG; no offsets   MaxRangeSets u16@4, MaxRanges u16@6,   kept in bytes (programs are KiB), PTYPEs
//	                                                         MaxProgram bytes u32@8, PTYPE bitmap   supported as a bitmap (bit 0: eBPF)
//	                                                         u64@16
//	program type and image    PTYPE vendor specific          PTYPE 0xC0; image = csd.Image        no public eBPF PTYPE or image format: the
//	                                                         (verified instructions, maps, BTF)     device re-verifies what it loads
//	Memory Copy source        format 2h/3h: SNSID, SLBA,     format 2h plus SCNTLID u16 at bytes    the drafts name a subsystem-wide SNSID;
//	                          NLB                            2-3 (reserved in the drafts): the      bpfblk's emulated controllers number
//	                                                         controller of the source namespace,    their namespaces from 1 each, so the
//	                                                         0 = this one                           controller must be named too
//	reachability              reachability groups (log       Identify Controller: a compute         the group log's layout is not public;
//	                          page) say which namespaces a   controller reaches the namespaces of   SUBNQN and CMIC are ratified NVMe base
//	                          compute namespace reaches      the controllers with its SUBNQN        fields; others fail with 0x46 (Memory
//	                                                         (CMIC bit 1 set)                       Namespace Not Reachable)
//	Memory Copy from a peer   the device reads the SNSID     the compute controller has the         as a CSD doing peer-to-peer DMA; the bus
//	                          internally                     source controller execute a Read       counts it as peer traffic
//	                                                         into its SLM's bus address
package nvme
