//go:build linux

// Package uring is the io_uring bdev module (SPDK's uring bdev): a kernel
// block device such as /dev/nvme0n1, or a regular file, served through
// io_uring, so a drive that holds a file system or stays with the kernel's
// driver can be read, scanned and benchmarked like any bdev.
//
// The channels of one owner (a reactor) share one ring, whatever their
// devices; a channel made without an owner has its own. Submissions write an
// SQE in place; Poll reaps completions from the mapped CQ ring without a
// system call and hands the SQEs written since the last poll to the
// kernel with one io_uring_enter (none with SQPOLL while its kernel thread
// is awake). An I/O that a completion callback submits during the poll
// goes to the kernel at once, as fio's default does; Config.Batch holds
// those for the poll's one enter instead. Buffers from AllocBuffer come from page-aligned arenas registered
// with every ring (READ_FIXED/WRITE_FIXED); other memory works through
// plain READ/WRITE; the devices' descriptors are in the ring's
// registered-file table. A reactor's ring is bound to its thread
// (DEFER_TASKRUN), so the kernel finishes completions when a poll asks
// rather than interrupting the reactor. The file is opened with O_DIRECT
// where it allows it and buffered otherwise, which Device.Note says. On
// tmpfs and ramfs, which io_uring could only hand to worker threads, the
// poll does the reads and writes itself (Device.Inline). Nothing on the
// I/O path allocates or locks; inline I/O and, without Batch, I/O
// submitted from completions make a system call each.
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
	// NoInline sends every I/O through the ring, even on a file system
	// that keeps its data in memory but cannot read it without blocking
	// (see Device.Inline).
	NoInline bool
	// Batch holds the I/Os that completion callbacks submit during a
	// poll and hands them to the kernel with the poll's one
	// io_uring_enter. Without it each goes to the kernel as it is
	// submitted, as fio does by default (iodepth_batch_submit=1): on a
	// disk at depth that keeps the device fed sooner and measured more
	// IOPS, at one system call per I/O (see RATIONALE.md).
	Batch bool
}

// ParseAddr parses "PATH[,sqpoll][,buffered][,noinline][,batch][,lba=512|4096]"
// (the part of a device address after "uring:").
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
		case o == "noinline":
			c.NoInline = true
		case o == "batch":
			c.Batch = true
		case strings.HasPrefix(o, "lba="):
			n, err := strconv.Atoi(strings.TrimPrefix(o, "lba="))
			if err != nil || (n != 512 && n != 4096) {
				return Config{}, errors.Errorf("device %q: option %q: want lba=512 or lba=4096", Scheme+s, o)
			}
			c.LBASize = n
		default:
			return Config{}, errors.Errorf("device %q: unknown option %q (want sqpoll, buffered, noinline, batch or lba=512|4096)", Scheme+s, o)
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
	// Inline reports that reads and writes are done by the polling
	// thread with pread and pwrite rather than through the ring: the
	// file is on a file system that keeps its data in memory (tmpfs,
	// ramfs) and cannot move it without blocking (RWF_NOWAIT refused),
	// so io_uring would hand every I/O to a worker thread, a wake-up and
	// a context switch for a copy the poller can do in less time.
	Inline bool
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
	b.batch = cfg.Batch
	if !blockDev && !cfg.NoInline && memoryBacked(b.fd, bs) {
		b.inline = true
		dev.Inline = true
	}
	kind, io := "file", "buffered"
	if blockDev {
		kind = "block device"
	}
	if dev.Direct {
		io = "O_DIRECT"
	}
	if dev.Inline {
		io += ", inline"
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
	inline   bool // reads and writes by pread/pwrite: see Device.Inline
	batch    bool // Config.Batch
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

// memoryBacked reports whether fd is a file on a file system that holds
// its data in memory (tmpfs, ramfs) and refuses non-blocking reads
// (preadv2 RWF_NOWAIT fails with EOPNOTSUPP): io_uring hands every I/O of
// such a file to an io-wq worker. The probe reads the first block.
func memoryBacked(fd, bs int) bool {
	var st unix.Statfs_t
	if unix.Fstatfs(fd, &st) != nil || (st.Type != unix.TMPFS_MAGIC && st.Type != unix.RAMFS_MAGIC) {
		return false
	}
	mem, err := unix.Mmap(-1, 0, max(bs, 4096), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return false
	}
	defer unix.Munmap(mem)
	_, err = unix.Preadv2(fd, [][]byte{mem[:bs]}, 0, unix.RWF_NOWAIT)
	return err == unix.EOPNOTSUPP
}

// processCPUs is the CPUs the process may run on, as its main thread had
// them when the program started: read before main runs, since a reactor
// may later pin that very thread to its one core (a thread created by a
// Go program inherits the creating thread's CPUs, so the main thread's are
// the process's until something pins it).
var processCPUs, processCPUsOK = startCPUs()

func startCPUs() (unix.CPUSet, bool) {
	var set unix.CPUSet
	return set, unix.SchedGetaffinity(0, &set) == nil
}

// workerCPUs returns the CPUs for the io-wq workers of a ring made on the
// calling thread, when that thread is pinned to fewer CPUs than the
// process started with (a reactor): all of the process's CPUs, so that
// the scheduler runs a request the kernel hands to a worker wherever a
// CPU is free, instead of on the reactor's one core only (what a worker
// inherits), where it waits for the busy loop to be preempted.
//
// Not only the other CPUs: on a machine whose other cores are busy (other
// reactors spin there), a worker barred from the reactor's core waited
// far longer. On 2 cores, the other one loaded, tmpfs 4 KiB reads through
// workers at QD1 went 1.3-2K IOPS with the other CPUs, 0.2-66K inherited
// (the reactor's core), 47-81K with all of them.
func workerCPUs() (unix.CPUSet, bool) {
	var self unix.CPUSet
	if !processCPUsOK || unix.SchedGetaffinity(0, &self) != nil || self.Count() >= processCPUs.Count() {
		return unix.CPUSet{}, false
	}
	return processCPUs, true
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
