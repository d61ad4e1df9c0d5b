//go:build linux

// Package uring is the minimal io_uring plumbing bpfblk needs: a ring set
// up with io_uring_setup, its SQ and CQ mapped into the process, SQEs
// written in place, one io_uring_enter per batch of submissions, CQEs
// reaped from the mapped CQ ring without a system call, and buffer
// registration. It is built on golang.org/x/sys/unix raw system calls and
// mmap: nothing on its submission or completion path allocates, locks or
// starts a goroutine.
//
// A Ring is owned by one goroutine (a reactor): it is not safe for
// concurrent use.
package uring

import (
	"runtime"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// Opcodes (include/uapi/linux/io_uring.h).
const (
	OpNop        = 0
	OpFsync      = 3
	OpReadFixed  = 4
	OpWriteFixed = 5
	OpFallocate  = 17
	OpRead       = 22
	OpWrite      = 23
	OpUringCmd   = 46
)

// Setup flags.
const (
	SetupSQPoll       = 1 << 1
	SetupCQSize       = 1 << 3
	SetupClamp        = 1 << 4
	SetupCoopTaskrun  = 1 << 8
	SetupTaskrunFlag  = 1 << 9
	SetupSQE128       = 1 << 10
	SetupCQE32        = 1 << 11
	SetupSingleIssuer = 1 << 12
	SetupDeferTaskrun = 1 << 13
	featSingleMmap    = 1 << 0
	sqNeedWakeup      = 1 << 0
	sqCQOverflow      = 1 << 1
	sqTaskrun         = 1 << 2
	enterGetEvents    = 1 << 0
	enterSQWakeup     = 1 << 1
	offSQRing         = 0
	offSQEs           = 0x10000000
	registerEventfd   = 4
	unregisterEventfd = 5
	registerFiles2    = 13
	registerFilesUpd2 = 14
	registerBuffers2  = 15
	registerBufUpd    = 16
	registerIOWQAff   = 17
	rsrcSparse        = 1 << 0
)

// SQE flags.
const (
	// SQEFixedFile says that SQE.Fd is an index of the ring's registered
	// file table, not a descriptor.
	SQEFixedFile = 1 << 0
)

// FsyncDatasync is the fsync flag of OpFsync that makes it fdatasync.
const FsyncDatasync = 1

// SQE is a submission queue entry (struct io_uring_sqe, 64 bytes). In a
// ring set up with SetupSQE128 each entry is followed by 64 more bytes of
// command (Cmd).
type SQE struct {
	Opcode      uint8
	Flags       uint8
	IOPrio      uint16
	Fd          int32
	Off         uint64 // offset; cmd_op in its low 32 bits for OpUringCmd
	Addr        uint64
	Len         uint32
	OpFlags     uint32
	UserData    uint64
	BufIndex    uint16
	Personality uint16
	FileIndex   int32
	Addr3       uint64
	pad         uint64
}

// CQE is a completion queue entry (struct io_uring_cqe, 16 bytes; 32 with
// SetupCQE32).
type CQE struct {
	UserData uint64
	Res      int32
	Flags    uint32
}

type params struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  struct {
		head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
		userAddr                                                        uint64
	}
	cqOff struct {
		head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
		userAddr                                                        uint64
	}
}

// Ring is one io_uring instance.
type Ring struct {
	fd int

	sqHead, sqTail, sqFlags *uint32
	sqMask, sqEntries       uint32
	sqes                    unsafe.Pointer
	sqeSize                 uintptr
	tail                    uint32 // our SQ tail, published by Submit
	toSubmit                uint32 // SQEs written since the last enter

	cqHead, cqTail *uint32
	cqMask         uint32
	cqes           unsafe.Pointer
	cqeSize        uintptr

	sqPoll          bool
	deferred        bool // SINGLE_ISSUER|DEFER_TASKRUN: completions wait for an enter
	ringMem, sqeMem []byte
}

// Options of New.
type Options struct {
	// Entries is the SQ size (rounded up to a power of two by the kernel);
	// the CQ has twice as many.
	Entries uint32
	// SQPoll has a kernel thread poll the SQ, so that submitting needs no
	// system call while the thread is awake.
	SQPoll bool
	// SQPollIdleMs is how long the SQ thread spins before it sleeps
	// (default 1000).
	SQPollIdleMs uint32
	// Big sets up 128-byte SQEs and 32-byte CQEs (NVMe passthrough).
	Big bool
	// SingleThread promises that one OS thread, the one calling New,
	// makes every call on the ring for its whole life (a goroutine locked
	// to its thread, such as a reactor's). The ring is then set up with
	// SINGLE_ISSUER and DEFER_TASKRUN: the kernel finishes completions
	// only when that thread enters it for them, rather than interrupting
	// it for each one, and TaskRunPending says when to. A kernel without
	// them (before 6.1) gets a ring without; Deferred tells which. Calls
	// from another thread fail (EEXIST).
	SingleThread bool
}

// New sets up a ring.
func New(o Options) (*Ring, error) {
	if o.Entries == 0 || o.Entries > 32768 {
		return nil, errors.Errorf("io_uring: %d entries (want 1-32768)", o.Entries)
	}
	var p params
	p.flags = SetupCQSize | SetupClamp
	p.cqEntries = 2 * o.Entries
	if o.SQPoll {
		p.flags |= SetupSQPoll
		p.sqThreadIdle = o.SQPollIdleMs
		if p.sqThreadIdle == 0 {
			p.sqThreadIdle = 1000
		}
	}
	if o.Big {
		p.flags |= SetupSQE128 | SetupCQE32
	}
	deferred := o.SingleThread && !o.SQPoll
	if deferred {
		p.flags |= SetupSingleIssuer | SetupDeferTaskrun | SetupTaskrunFlag
	}
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(o.Entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno == unix.EINVAL && deferred {
		// Before Linux 6.1: the kernel interrupts the thread instead.
		deferred = false
		flags := p.flags &^ (SetupSingleIssuer | SetupDeferTaskrun | SetupTaskrunFlag)
		p = params{flags: flags, cqEntries: p.cqEntries, sqThreadIdle: p.sqThreadIdle}
		fd, _, errno = unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(o.Entries), uintptr(unsafe.Pointer(&p)), 0)
	}
	if errno != 0 {
		return nil, errors.Wrapf(errno, "io_uring_setup(%d entries, flags %#x)", o.Entries, p.flags)
	}
	r := &Ring{fd: int(fd), sqPoll: o.SQPoll, deferred: deferred, sqeSize: 64, cqeSize: 16}
	if o.Big {
		r.sqeSize, r.cqeSize = 128, 32
	}
	if p.features&featSingleMmap == 0 {
		unix.Close(r.fd)
		return nil, errors.New("io_uring: kernel lacks IORING_FEAT_SINGLE_MMAP (Linux 5.4)")
	}
	sqSize := uintptr(p.sqOff.array) + uintptr(p.sqEntries)*4
	cqSize := uintptr(p.cqOff.cqes) + uintptr(p.cqEntries)*r.cqeSize
	size := max(sqSize, cqSize)
	mem, err := unix.Mmap(r.fd, offSQRing, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		unix.Close(r.fd)
		return nil, errors.Wrap(err, "io_uring: mmap rings")
	}
	r.ringMem = mem
	sqes, err := unix.Mmap(r.fd, offSQEs, int(uintptr(p.sqEntries)*r.sqeSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		r.Close()
		return nil, errors.Wrap(err, "io_uring: mmap SQEs")
	}
	r.sqeMem = sqes
	base := unsafe.Pointer(&mem[0])
	at := func(off uint32) *uint32 { return (*uint32)(unsafe.Add(base, off)) }
	r.sqHead, r.sqTail, r.sqFlags = at(p.sqOff.head), at(p.sqOff.tail), at(p.sqOff.flags)
	r.sqMask, r.sqEntries = *at(p.sqOff.ringMask), *at(p.sqOff.ringEntries)
	r.cqHead, r.cqTail = at(p.cqOff.head), at(p.cqOff.tail)
	r.cqMask = *at(p.cqOff.ringMask)
	r.cqes = unsafe.Add(base, p.cqOff.cqes)
	r.sqes = unsafe.Pointer(&sqes[0])
	// The SQ index array maps slot i to SQE i, once for all.
	arr := unsafe.Slice(at(p.sqOff.array), p.sqEntries)
	for i := range arr {
		arr[i] = uint32(i)
	}
	r.tail = atomic.LoadUint32(r.sqTail)
	return r, nil
}

// Entries returns the SQ size.
func (r *Ring) Entries() uint32 { return r.sqEntries }

// Fd returns the ring's file descriptor.
func (r *Ring) Fd() int { return r.fd }

// Deferred reports whether the ring was set up with DEFER_TASKRUN
// (Options.SingleThread on a kernel that has it): its completions reach
// the CQ only through Submit, SubmitAndWait or GetEvents, when
// TaskRunPending says some are waiting.
func (r *Ring) Deferred() bool { return r.deferred }

// TaskRunPending reports whether the kernel has completions waiting for
// this thread to enter it (a deferred ring) before they show in the CQ,
// or has CQEs held back by a full CQ. It reads a flag of the mapped ring:
// no system call.
func (r *Ring) TaskRunPending() bool {
	return atomic.LoadUint32(r.sqFlags)&(sqTaskrun|sqCQOverflow) != 0
}

// GetEvents submits what is written and has the kernel post the
// completions it holds for this thread to the CQ, without waiting for
// any: one io_uring_enter.
func (r *Ring) GetEvents() (int, error) {
	atomic.StoreUint32(r.sqTail, r.tail)
	got, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(r.toSubmit), 0, enterGetEvents, 0, 0)
	if errno != 0 {
		if errno == unix.EINTR || errno == unix.EAGAIN || errno == unix.EBUSY {
			return 0, nil
		}
		return 0, errors.Wrap(errno, "io_uring_enter (get events)")
	}
	if !r.sqPoll {
		r.toSubmit -= uint32(got)
	}
	return int(got), nil
}

// GetSQE returns the next free SQE, zeroed, or nil when the SQ is full. The
// SQE is published by the next Submit.
func (r *Ring) GetSQE() *SQE {
	if r.tail-atomic.LoadUint32(r.sqHead) >= r.sqEntries {
		return nil
	}
	sqe := (*SQE)(unsafe.Add(r.sqes, uintptr(r.tail&r.sqMask)*r.sqeSize))
	*sqe = SQE{}
	if r.sqeSize == 128 {
		*(*[64]byte)(unsafe.Add(unsafe.Pointer(sqe), 64)) = [64]byte{}
	}
	r.tail++
	r.toSubmit++
	return sqe
}

// Cmd returns the 80-byte command area of a 128-byte SQE (from Addr3 on).
func Cmd(sqe *SQE) *[80]byte { return (*[80]byte)(unsafe.Pointer(&sqe.Addr3)) }

// Pending returns the number of SQEs written and not yet submitted.
func (r *Ring) Pending() uint32 { return r.toSubmit }

// Submit publishes the SQEs written since the last call and, without
// SQPoll, hands them to the kernel with one io_uring_enter. With SQPoll it
// enters only to wake a sleeping SQ thread. It returns the number the
// kernel took (with SQPoll, the number published).
func (r *Ring) Submit() (int, error) {
	return r.enter(0)
}

// SubmitAndWait is Submit that also waits for at least one completion.
func (r *Ring) SubmitAndWait() (int, error) {
	return r.enter(1)
}

func (r *Ring) enter(wait uint32) (int, error) {
	n := r.toSubmit
	if n == 0 && wait == 0 {
		return 0, nil
	}
	atomic.StoreUint32(r.sqTail, r.tail)
	var flags uintptr
	if wait > 0 || r.deferred {
		// A deferred ring's completions are posted by an enter with
		// GETEVENTS: have this one do it, for the next reap.
		flags |= enterGetEvents
	}
	if r.sqPoll {
		r.toSubmit = 0
		if atomic.LoadUint32(r.sqFlags)&sqNeedWakeup != 0 {
			flags |= enterSQWakeup
		}
		if flags == 0 {
			return int(n), nil
		}
		_, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), 0, uintptr(wait), flags, 0, 0)
		if errno != 0 && errno != unix.EINTR && errno != unix.EAGAIN && errno != unix.EBUSY {
			return int(n), errors.Wrap(errno, "io_uring_enter (SQ wakeup)")
		}
		return int(n), nil
	}
	got, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(n), uintptr(wait), flags, 0, 0)
	if errno != 0 {
		if errno == unix.EINTR || errno == unix.EAGAIN || errno == unix.EBUSY {
			return 0, nil // the SQEs stay queued for the next call
		}
		return 0, errors.Wrap(errno, "io_uring_enter")
	}
	r.toSubmit -= uint32(got)
	return int(got), nil
}

// Peek returns the oldest unreaped CQE, or nil when the CQ is empty. The
// CQE stays valid until Advance.
func (r *Ring) Peek() *CQE {
	head := *r.cqHead // only this goroutine writes it
	if head == atomic.LoadUint32(r.cqTail) {
		return nil
	}
	return (*CQE)(unsafe.Add(r.cqes, uintptr(head&r.cqMask)*r.cqeSize))
}

// BigCQE returns the 16 extra bytes of a 32-byte CQE.
func BigCQE(c *CQE) *[2]uint64 { return (*[2]uint64)(unsafe.Add(unsafe.Pointer(c), 16)) }

// Advance marks the oldest CQE reaped.
func (r *Ring) Advance() {
	atomic.StoreUint32(r.cqHead, *r.cqHead+1)
}

// RegisterSparseBuffers makes a table of n empty registered-buffer slots.
func (r *Ring) RegisterSparseBuffers(n uint32) error {
	return r.registerSparse(registerBuffers2, n, "buffer")
}

// UpdateBuffer registers mem as buffer index of the table, in place of
// what the index held; an empty mem leaves the index empty. The memory
// must stay mapped while it is registered.
func (r *Ring) UpdateBuffer(index uint32, mem []byte) error {
	var iov unix.Iovec
	if len(mem) > 0 {
		iov.Base = &mem[0]
		iov.SetLen(len(mem))
	}
	upd := struct {
		offset, resv uint32
		data, tags   uint64
		nr, resv2    uint32
	}{offset: index, data: uint64(uintptr(unsafe.Pointer(&iov))), nr: 1}
	_, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), registerBufUpd, uintptr(unsafe.Pointer(&upd)), unsafe.Sizeof(upd), 0, 0)
	runtime.KeepAlive(&iov)
	if errno != 0 {
		return errors.Wrapf(errno, "io_uring_register: buffer %d (%d bytes)", index, len(mem))
	}
	return nil
}

// RegisterSparseFiles makes a table of n empty registered-file slots.
func (r *Ring) RegisterSparseFiles(n uint32) error {
	return r.registerSparse(registerFiles2, n, "file")
}

// registerSparse makes a table of n empty slots of a registered resource
// (IORING_REGISTER_BUFFERS2 or IORING_REGISTER_FILES2 with
// IORING_RSRC_REGISTER_SPARSE).
func (r *Ring) registerSparse(op uintptr, n uint32, what string) error {
	reg := struct {
		nr, flags uint32
		resv2     uint64
		data      uint64
		tags      uint64
	}{nr: n, flags: rsrcSparse}
	_, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), op, uintptr(unsafe.Pointer(&reg)), unsafe.Sizeof(reg), 0, 0)
	if errno != 0 {
		return errors.Wrapf(errno, "io_uring_register: %d sparse %s slots", n, what)
	}
	return nil
}

// UpdateFile puts descriptor fd at index of the registered-file table
// (an SQE with SQEFixedFile names it by the index); fd -1 empties the
// slot. The ring holds its own reference to the file: closing fd does
// not end it.
func (r *Ring) UpdateFile(index uint32, fd int32) error {
	fds := [1]int32{fd}
	upd := struct {
		offset, resv uint32
		data, tags   uint64
		nr, resv2    uint32
	}{offset: index, data: uint64(uintptr(unsafe.Pointer(&fds[0]))), nr: 1}
	_, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), registerFilesUpd2, uintptr(unsafe.Pointer(&upd)), unsafe.Sizeof(upd), 0, 0)
	runtime.KeepAlive(&fds)
	if errno != 0 {
		return errors.Wrapf(errno, "io_uring_register: file %d (descriptor %d)", index, fd)
	}
	return nil
}

// SetWorkerAffinity sets the CPUs of the ring's io-wq workers, the kernel
// threads that run requests which cannot complete without blocking (a
// file system without non-blocking reads, such as tmpfs). By default they
// inherit the submitting thread's CPUs: a reactor pinned to one core then
// shares it with its own workers.
func (r *Ring) SetWorkerAffinity(cpus *unix.CPUSet) error {
	_, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), registerIOWQAff, uintptr(unsafe.Pointer(cpus)), unsafe.Sizeof(*cpus), 0, 0)
	if errno != 0 {
		return errors.Wrap(errno, "io_uring_register: io-wq affinity")
	}
	return nil
}

// RegisterEventfd has the kernel signal eventfd fd when it posts
// completions to the CQ, and, on a deferred ring, when a completion
// starts waiting for this thread to enter (TaskRunPending turns true):
// something that sleeps on fd (a reactor parked in epoll_wait) wakes when
// the ring has work. Signals are edge-like: several completions may make
// one, and one may come while the CQ is still empty (a deferred ring).
func (r *Ring) RegisterEventfd(fd int) error {
	efd := int32(fd)
	_, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), registerEventfd, uintptr(unsafe.Pointer(&efd)), 1, 0, 0)
	if errno != 0 {
		return errors.Wrapf(errno, "io_uring_register: eventfd %d", fd)
	}
	return nil
}

// UnregisterEventfd undoes RegisterEventfd.
func (r *Ring) UnregisterEventfd() error {
	_, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), unregisterEventfd, 0, 0, 0, 0)
	if errno != 0 {
		return errors.Wrap(errno, "io_uring_register: unregister eventfd")
	}
	return nil
}

// Close tears the ring down; the kernel cancels what is in flight.
func (r *Ring) Close() error {
	var first error
	if r.sqeMem != nil {
		first = unix.Munmap(r.sqeMem)
		r.sqeMem = nil
	}
	if r.ringMem != nil {
		if err := unix.Munmap(r.ringMem); err != nil && first == nil {
			first = err
		}
		r.ringMem = nil
	}
	if r.fd >= 0 {
		if err := unix.Close(r.fd); err != nil && first == nil {
			first = err
		}
		r.fd = -1
	}
	return errors.Wrap(first, "io_uring: close")
}

// Errno turns a negative CQE result into an error.
func Errno(res int32) error { return syscall.Errno(-res) }

// Drop withdraws the SQEs written since the last Submit that the kernel
// has not taken, calling fn with each one's user data. It is for a ring
// whose io_uring_enter failed for good.
func (r *Ring) Drop(fn func(userData uint64)) {
	if r.sqPoll {
		return // published already: the SQ thread owns them
	}
	var uds []uint64
	for t := r.tail - r.toSubmit; t != r.tail; t++ {
		uds = append(uds, (*SQE)(unsafe.Add(r.sqes, uintptr(t&r.sqMask)*r.sqeSize)).UserData)
	}
	r.tail -= r.toSubmit
	r.toSubmit = 0
	for _, ud := range uds {
		fn(ud) // may write new SQEs
	}
}
