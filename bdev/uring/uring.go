//go:build linux

// Package uring is the io_uring bdev module (SPDK's uring bdev): a kernel
// block device such as /dev/nvme0n1, or a regular file, served through
// io_uring, so a drive that holds a file system or stays with the kernel's
// driver can be read, scanned and benchmarked like any bdev.
//
// Each bdev channel (one per reactor and bdev) owns one ring. Submissions write an
// SQE in place; Poll reaps completions from the mapped CQ ring without a
// system call, then hands every new SQE (the completions' follow-ups
// included) to the kernel with one io_uring_enter (none with SQPOLL while
// its kernel thread is awake). Buffers from AllocBuffer come from page-aligned arenas registered
// with every ring (READ_FIXED/WRITE_FIXED); other memory works through
// plain READ/WRITE. The file is opened with O_DIRECT where it allows it
// and buffered otherwise (tmpfs, for one), which Device.Note says. Nothing
// on the I/O path allocates, locks or makes a system call per I/O.
package uring

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/bpfblk/bpfblk/bdev"
	iu "github.com/bpfblk/bpfblk/internal/uring"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// Scheme prefixes a uring device address.
const Scheme = "uring:"

// Config describes a uring device.
type Config struct {
	// Path is the block device or regular file.
	Path string
	// LBASize is the block size of a regular file, 512 or 4096; 0 means
	// 512, or the file system's O_DIRECT alignment if that is larger. A
	// block device always has its logical block size.
	LBASize int
	// SQPoll gives every ring a kernel thread that polls its SQ.
	SQPoll bool
	// Buffered skips O_DIRECT.
	Buffered bool
}

// ParseAddr parses "PATH[,sqpoll][,buffered][,lba=512|4096]" (the part of
// a device address after "uring:").
func ParseAddr(s string) (Config, error) {
	parts := strings.Split(s, ",")
	c := Config{Path: parts[0]}
	if c.Path == "" {
		return Config{}, errors.Errorf("device %q: uring: needs a path", Scheme+s)
	}
	for _, o := range parts[1:] {
		switch {
		case o == "sqpoll":
			c.SQPoll = true
		case o == "buffered":
			c.Buffered = true
		case strings.HasPrefix(o, "lba="):
			n, err := strconv.Atoi(strings.TrimPrefix(o, "lba="))
			if err != nil || (n != 512 && n != 4096) {
				return Config{}, errors.Errorf("device %q: option %q: want lba=512 or lba=4096", Scheme+s, o)
			}
			c.LBASize = n
		default:
			return Config{}, errors.Errorf("device %q: unknown option %q (want sqpoll, buffered or lba=512|4096)", Scheme+s, o)
		}
	}
	return c, nil
}

// Device is an open uring device.
type Device struct {
	// Bdev is the device's bdev.
	Bdev *bdev.Bdev
	// Path is the block device or file.
	Path string
	// BlockDevice reports whether Path is a block device.
	BlockDevice bool
	// Direct reports whether I/O bypasses the page cache (O_DIRECT).
	Direct bool
	// ReadOnly reports that the path could only be opened for reading:
	// writes fail.
	ReadOnly bool
	// Note says, for a person, what differs from the best case (buffered
	// I/O, read-only), or is empty.
	Note string
}

// devices maps the bdevs of open uring devices to their Device, for
// Lookup.
var devices sync.Map

// Lookup returns the uring device behind b, or false for a bdev of another
// module (or one closed).
func Lookup(b *bdev.Bdev) (*Device, bool) {
	d, ok := devices.Load(b)
	if !ok {
		return nil, false
	}
	return d.(*Device), true
}

// GenericPath returns the NVMe generic character device (/dev/ngXnY) of a
// kernel NVMe namespace's block device (/dev/nvmeXnY), the path Passthru
// opens, or "" when path is not such a block device.
func GenericPath(path string) string {
	base := filepath.Base(path)
	rest, ok := strings.CutPrefix(base, "nvme")
	c, n, ok2 := strings.Cut(rest, "n")
	if !ok || !ok2 || !allDigits(c) || !allDigits(n) || filepath.Dir(path) != "/dev" {
		return ""
	}
	return "/dev/ng" + rest
}

func allDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

// maxTransfer is the largest I/O a ring takes in one SQE; the bdev layer
// splits larger ones.
const maxTransfer = 1 << 20

// Open opens cfg.Path as a bdev named name.
func Open(name string, cfg Config) (*Device, error) {
	where := Scheme + cfg.Path
	fi, err := os.Stat(cfg.Path)
	if err != nil {
		return nil, errors.Wrapf(err, "device %s", where)
	}
	blockDev := fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0
	if !blockDev && !fi.Mode().IsRegular() {
		return nil, errors.Errorf("device %s: not a block device or regular file", where)
	}
	dev := &Device{Path: cfg.Path, BlockDevice: blockDev}
	var notes []string
	b := &backend{path: cfg.Path, fd: -1, bufFd: -1}
	defer func() {
		if dev.Bdev == nil {
			b.Close()
		}
	}()
	mode := unix.O_RDWR
	open := func(flags int) (int, error) {
		for {
			fd, err := unix.Open(cfg.Path, mode|flags|unix.O_CLOEXEC, 0)
			if err == unix.EINTR {
				continue
			}
			return fd, err
		}
	}
	b.bufFd, err = open(0)
	if err == unix.EACCES || err == unix.EROFS || err == unix.EPERM {
		mode = unix.O_RDONLY
		dev.ReadOnly = true
		notes = append(notes, "read-only: writes will fail")
		b.bufFd, err = open(0)
	}
	if err != nil {
		return nil, errors.Wrapf(err, "device %s: open", where)
	}
	var size uint64
	bs := cfg.LBASize
	if blockDev {
		lbs, err := unix.IoctlGetInt(b.bufFd, unix.BLKSSZGET)
		if err != nil {
			return nil, errors.Wrapf(err, "device %s: BLKSSZGET", where)
		}
		if cfg.LBASize != 0 && cfg.LBASize != lbs {
			return nil, errors.Errorf("device %s: lba=%d, but the device's logical block size is %d", where, cfg.LBASize, lbs)
		}
		bs = lbs
		var n uint64
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(b.bufFd), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&n))); errno != 0 {
			return nil, errors.Wrapf(errno, "device %s: BLKGETSIZE64", where)
		}
		size = n
	} else {
		size = uint64(fi.Size())
	}
	b.memAlign = 4096
	if !cfg.Buffered {
		fd, err := open(unix.O_DIRECT)
		switch {
		case err != nil:
			notes = append(notes, fmt.Sprintf("buffered I/O: the file system refuses O_DIRECT (%v)", err))
		default:
			offAlign := max(bs, 512)
			if !blockDev {
				var st unix.Statx_t
				if unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &st) == nil && st.Mask&unix.STATX_DIOALIGN != 0 && st.Dio_offset_align > 0 {
					offAlign = int(st.Dio_offset_align)
					b.memAlign = max(int(st.Dio_mem_align), 1)
				}
				if bs == 0 {
					bs = max(512, offAlign)
				}
			}
			if offAlign > bs || bs%offAlign != 0 || b.memAlign > 4096 {
				unix.Close(fd)
				notes = append(notes, fmt.Sprintf("buffered I/O: O_DIRECT needs %d-byte alignment, above the %d-byte blocks", offAlign, bs))
			} else {
				b.fd = fd
				dev.Direct = true
			}
		}
	}
	if bs == 0 {
		bs = 512
	}
	if b.fd < 0 {
		b.fd = b.bufFd
		b.memAlign = 1
	}
	if size < uint64(bs) {
		return nil, errors.Errorf("device %s: %d bytes is less than one %d-byte block", where, size, bs)
	}
	b.bs = bs
	b.sqpoll = cfg.SQPoll
	kind, io := "file", "buffered"
	if blockDev {
		kind = "block device"
	}
	if dev.Direct {
		io = "O_DIRECT"
	}
	info := bdev.Info{
		Name:        name,
		Product:     fmt.Sprintf("io_uring %s %s (%s)", kind, cfg.Path, io),
		BlockSize:   bs,
		NumBlocks:   size / uint64(bs),
		MaxTransfer: maxTransfer,
		IOTypes:     bdev.Types(bdev.Read, bdev.Write, bdev.Flush, bdev.WriteZeroes, bdev.Unmap),
	}
	bd, err := bdev.New(info, b)
	if err != nil {
		return nil, err
	}
	dev.Bdev = bd
	b.dev = dev
	devices.Store(bd, dev)
	if len(notes) > 0 {
		dev.Note = fmt.Sprintf("%s (%s): %s", name, where, strings.Join(notes, "; "))
	}
	return dev, nil
}

// backend is the module side of a uring bdev.
type backend struct {
	path     string
	fd       int // the descriptor I/O goes through: O_DIRECT where allowed
	bufFd    int // a buffered descriptor, for memory O_DIRECT cannot take
	memAlign int // O_DIRECT's memory alignment; 1 when fd is buffered
	bs       int
	sqpoll   bool
	dev      *Device

	mu     sync.Mutex               // buffer allocation only
	arenas atomic.Pointer[[]*arena] // copy-on-write, read by channels
}

// arena is one mapping buffers are carved from, registered with every
// ring at index idx.
type arena struct {
	dma  nvme.DMA
	used int // bytes handed out, from the start
	live int // buffers not freed; at 0 the arena is reused from the start
	idx  int
}

const (
	arenaSize = 2 << 20
	// maxArenas bounds the registered-buffer table of a ring; buffers of
	// further arenas are moved with plain READ/WRITE.
	maxArenas = 64
	// bufAlign aligns every buffer, for O_DIRECT.
	bufAlign = 4096
)

func (b *backend) NewChannel(depth int) (bdev.BackendChannel, error) {
	entries := uint32(1)
	for entries < uint32(depth) {
		entries <<= 1
	}
	r, err := iu.New(iu.Options{Entries: entries, SQPoll: b.sqpoll})
	if err != nil {
		return nil, errors.Wrapf(err, "uring %s", b.path)
	}
	c := &channel{b: b, ring: r, fd: int32(b.fd), bufFd: int32(b.bufFd), bs: uint64(b.bs),
		alignMask: uintptr(b.memAlign - 1), slots: make([]slot, depth), free: make([]uint32, depth)}
	for i := range c.free {
		c.free[i] = uint32(depth - 1 - i)
	}
	// Without a registered-buffer table every I/O goes through plain
	// READ/WRITE: slower by the page pinning, but it works.
	c.fixed = r.RegisterSparseBuffers(maxArenas) == nil
	if cpus, ok := workerCPUs(); ok {
		r.SetWorkerAffinity(&cpus) // best effort: the default works too
	}
	return c, nil
}

// workerCPUs returns the CPUs for a ring's io-wq workers when the calling
// thread is pinned to fewer CPUs than the process may use (a reactor): the
// process's CPUs but the thread's, so that a request the kernel has to
// punt to a worker does not wait for the reactor's busy loop to yield its
// core.
func workerCPUs() (unix.CPUSet, bool) {
	var self, proc unix.CPUSet
	if unix.SchedGetaffinity(0, &self) != nil || unix.SchedGetaffinity(unix.Getpid(), &proc) != nil {
		return proc, false
	}
	if self.Count() >= proc.Count() {
		return proc, false
	}
	for i := range proc {
		proc[i] &^= self[i]
	}
	return proc, proc.Count() > 0
}

func (b *backend) AllocBuffer(size int) (bdev.Buffer, error) {
	if size <= 0 {
		return bdev.Buffer{}, errors.Errorf("uring %s: buffer of %d bytes", b.path, size)
	}
	need := (size + bufAlign - 1) &^ (bufAlign - 1)
	b.mu.Lock()
	defer b.mu.Unlock()
	var list []*arena
	if p := b.arenas.Load(); p != nil {
		list = *p
	}
	for _, a := range list {
		if a.live == 0 {
			a.used = 0
		}
		if len(a.dma.Buf)-a.used >= need {
			return a.take(size, need), nil
		}
	}
	asz := max(arenaSize, (need+arenaSize-1)&^(arenaSize-1))
	mem, err := unix.Mmap(-1, 0, asz, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return bdev.Buffer{}, errors.Wrapf(err, "uring %s: map %d bytes of buffer memory", b.path, asz)
	}
	a := &arena{dma: nvme.DMA{Buf: mem, IOVA: uint64(uintptr(unsafe.Pointer(&mem[0])))}, idx: len(list)}
	next := append(append([]*arena(nil), list...), a)
	b.arenas.Store(&next)
	return a.take(size, need), nil
}

func (a *arena) take(size, need int) bdev.Buffer {
	off := a.used
	a.used += need
	a.live++
	return bdev.Buffer{Bytes: a.dma.Buf[off : off+size : off+size], DMA: &a.dma, Off: off}
}

func (b *backend) FreeBuffer(buf bdev.Buffer) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p := b.arenas.Load(); p != nil {
		for _, a := range *p {
			if &a.dma == buf.DMA {
				if a.live > 0 {
					a.live--
				}
				return nil
			}
		}
	}
	return errors.Errorf("uring %s: free of a buffer it did not allocate", b.path)
}

func (b *backend) Close() error {
	if b.dev != nil {
		devices.Delete(b.dev.Bdev)
	}
	var first error
	if b.fd >= 0 && b.fd != b.bufFd {
		first = unix.Close(b.fd)
	}
	if b.bufFd >= 0 {
		if err := unix.Close(b.bufFd); err != nil && first == nil {
			first = err
		}
	}
	b.fd, b.bufFd = -1, -1
	if p := b.arenas.Swap(nil); p != nil {
		for _, a := range *p {
			if err := unix.Munmap(a.dma.Buf); err != nil && first == nil {
				first = err
			}
		}
	}
	return errors.Wrapf(first, "uring %s: close", b.path)
}

// slot is one I/O in flight: the SQE's user data is its index.
type slot struct {
	io   *bdev.IO
	done uint64 // bytes moved so far (a short transfer is continued)
}

// channel is one ring and the I/Os in flight on it.
type channel struct {
	b         *backend
	ring      *iu.Ring
	fd, bufFd int32
	bs        uint64
	alignMask uintptr
	slots     []slot
	free      []uint32 // stack of idle slots

	// fallback[0] is set once Write Zeroes found FALLOC_FL_ZERO_RANGE
	// unsupported (tmpfs) and punches holes instead; fallback[1] once
	// Unmap found FALLOC_FL_PUNCH_HOLE unsupported (a block device without
	// discard) and zeroes instead. Either way the blocks read as zeroes.
	fallback [2]bool

	fixed   bool        // the ring has a registered-buffer table
	reg     []*nvme.DMA // arenas registered with this ring, by index
	lastDMA *nvme.DMA   // the arena of the last lookup, registered at lastIdx
	lastIdx uint16
	lastNo  *nvme.DMA // memory the last lookup found unregistered
}

func (c *channel) Submit(io *bdev.IO) error {
	n := len(c.free)
	if n == 0 {
		return bdev.ErrBusy
	}
	i := c.free[n-1]
	s := &c.slots[i]
	s.io, s.done = io, 0
	if !c.prep(i, s) {
		s.io = nil
		return bdev.ErrBusy
	}
	c.free = c.free[:n-1]
	return nil
}

// prep writes the SQE of slot i (from s.done on, for a read or write).
func (c *channel) prep(i uint32, s *slot) bool {
	sqe := c.ring.GetSQE()
	if sqe == nil {
		return false
	}
	io := s.io
	sqe.UserData = uint64(i)
	sqe.Fd = c.fd
	switch io.Type {
	case bdev.Read, bdev.Write:
		buf := io.Buf
		addr := uintptr(unsafe.Pointer(unsafe.SliceData(buf.Bytes))) + uintptr(s.done)
		sqe.Off = io.LBA*c.bs + s.done
		sqe.Addr = uint64(addr)
		sqe.Len = uint32(io.Count*c.bs - s.done)
		if addr&c.alignMask != 0 {
			sqe.Fd = c.bufFd // memory O_DIRECT cannot take
		}
		if idx, ok := c.bufIndex(buf.DMA); ok {
			sqe.Opcode = iu.OpReadFixed
			if io.Type == bdev.Write {
				sqe.Opcode = iu.OpWriteFixed
			}
			sqe.BufIndex = idx
		} else {
			sqe.Opcode = iu.OpRead
			if io.Type == bdev.Write {
				sqe.Opcode = iu.OpWrite
			}
		}
	case bdev.Flush:
		sqe.Opcode = iu.OpFsync
		sqe.OpFlags = iu.FsyncDatasync
	case bdev.WriteZeroes, bdev.Unmap:
		// fallocate takes the length in addr and the mode in len.
		sqe.Opcode = iu.OpFallocate
		sqe.Off = io.LBA * c.bs
		sqe.Addr = io.Count * c.bs
		sqe.Len = c.fallocMode(io.Type)
	default:
		sqe.Opcode = iu.OpNop // completes with the error below
		s.done = ^uint64(0)
	}
	return true
}

// bufIndex returns the registered-buffer index of arena memory d.
func (c *channel) bufIndex(d *nvme.DMA) (uint16, bool) {
	if d == c.lastDMA && d != nil {
		return c.lastIdx, true
	}
	return c.lookup(d)
}

// lookup is bufIndex off its one-entry cache: it registers arenas made
// since the ring last looked (once per arena and ring).
func (c *channel) lookup(d *nvme.DMA) (uint16, bool) {
	if d == nil || d == c.lastNo || !c.fixed {
		return 0, false
	}
	for i, r := range c.reg {
		if r == d {
			c.lastDMA, c.lastIdx = d, uint16(i)
			return uint16(i), true
		}
	}
	if p := c.b.arenas.Load(); p != nil {
		for _, a := range (*p)[len(c.reg):] {
			if a.idx >= maxArenas {
				break
			}
			if err := c.ring.UpdateBuffer(uint32(a.idx), a.dma.Buf); err != nil {
				// Out of lockable memory, say: this ring moves
				// everything with plain READ/WRITE from now on,
				// rather than trying again on every miss.
				c.fixed = false
				break
			}
			c.reg = append(c.reg, &a.dma)
			if &a.dma == d {
				c.lastDMA, c.lastIdx = d, uint16(a.idx)
				return uint16(a.idx), true
			}
		}
	}
	c.lastNo = d
	return 0, false
}

// fallocMode is the fallocate mode of a Write Zeroes or an Unmap.
func (c *channel) fallocMode(t bdev.IOType) uint32 {
	zero := t == bdev.WriteZeroes
	if c.fallback[t-bdev.WriteZeroes] {
		zero = !zero
	}
	if zero {
		return unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE
	}
	return unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE
}

// ErrShort is the error of a read that found the end of the file before
// the I/O's end (the file shrank).
var ErrShort = errors.New("uring: short transfer at end of file")

func (c *channel) Poll() int {
	n := 0
	for cqe := c.ring.Peek(); cqe != nil; cqe = c.ring.Peek() {
		i, res := uint32(cqe.UserData), cqe.Res
		c.ring.Advance()
		if i >= uint32(len(c.slots)) || c.slots[i].io == nil {
			continue // not ours: nothing else submits on this ring
		}
		s := &c.slots[i]
		io := s.io
		var err error
		switch {
		case s.done == ^uint64(0):
			err = errors.Wrapf(bdev.ErrUnsupported, "uring %s: %v", c.b.path, io.Type)
		case res == -int32(unix.EOPNOTSUPP) && (io.Type == bdev.WriteZeroes || io.Type == bdev.Unmap) && !c.fallback[io.Type-bdev.WriteZeroes]:
			c.fallback[io.Type-bdev.WriteZeroes] = true
			if c.prep(i, s) {
				continue
			}
			err = errors.Wrapf(iu.Errno(res), "uring %s: %v of blocks %d+%d", c.b.path, io.Type, io.LBA, io.Count)
		case res < 0:
			err = errors.Wrapf(iu.Errno(res), "uring %s: %v of blocks %d+%d", c.b.path, io.Type, io.LBA, io.Count)
		case io.Type == bdev.Read || io.Type == bdev.Write:
			s.done += uint64(res)
			if want := io.Count * c.bs; s.done < want {
				if res > 0 && c.prep(i, s) {
					continue // the rest of a short transfer
				}
				err = errors.Wrapf(ErrShort, "%s: %v of blocks %d+%d moved %d of %d bytes", c.b.path, io.Type, io.LBA, io.Count, s.done, want)
			}
		}
		s.io = nil
		c.free = append(c.free, i)
		n++
		io.Done(err)
	}
	// One enter for everything submitted since the last Poll, the
	// callbacks' new I/Os included: they go out now rather than a
	// reactor round later.
	if c.ring.Pending() > 0 {
		if onSubmit != nil {
			onSubmit(c.ring.Pending())
		}
		if _, err := c.ring.Submit(); err != nil {
			c.failPending(err)
		}
	}
	return n
}

// onSubmit, when set (by tests), sees each batch Poll hands the kernel.
var onSubmit func(sqes uint32)

// failPending completes the I/Os whose SQEs the kernel refused to take.
func (c *channel) failPending(err error) {
	c.ring.Drop(func(ud uint64) {
		i := uint32(ud)
		if i >= uint32(len(c.slots)) || c.slots[i].io == nil {
			return
		}
		io := c.slots[i].io
		c.slots[i].io = nil
		c.free = append(c.free, i)
		io.Done(errors.Wrapf(err, "uring %s", c.b.path))
	})
}

func (c *channel) Close() error {
	for _, s := range c.slots {
		if s.io != nil {
			return errors.Errorf("uring %s: close a ring with I/Os in flight", c.b.path)
		}
	}
	return c.ring.Close()
}
