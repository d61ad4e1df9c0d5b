package mock

import (
	"os"
	"sync/atomic"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// Kind selects a namespace's backing store.
type Kind int

const (
	// Memory is sparse memory: chunks are allocated on first write, so a
	// 1 TiB namespace costs nothing until written.
	Memory Kind = iota
	// File is backed by a regular file. Unless Size is set, the namespace
	// holds the whole file: its size rounded up to the LBA size, so a file
	// whose size is not a multiple of it ends in a block that reads as the
	// file's tail followed by zeroes (writing that block extends the file).
	File
	// Null moves no data: writes are dropped, reads leave the host buffer
	// untouched. For measuring the stack itself.
	Null
)

// NamespaceConfig describes one namespace.
type NamespaceConfig struct {
	Kind Kind
	// Size in bytes (Memory, Null, optional for File); rounded down to LBA.
	Size uint64
	// LBASize is 512 (default) or 4096.
	LBASize int
	// Path of the backing file (File).
	Path string
	// CSI is the I/O command set (default nvme.CSINVM). Other command sets
	// need handlers registered with RegisterCommandSet.
	CSI uint8
}

// backend stores namespace data.
type backend interface {
	readAt(p []byte, off int64) error
	writeAt(p []byte, off int64) error
	zero(off, n int64) error
	flush() error
	close() error
}

type namespace struct {
	id      uint32
	csi     uint8
	blocks  uint64
	lbaSize int
	shift   uint
	null    bool
	store   backend
	ops     *CommandSet
	slm     atomic.Pointer[[]byte] // memory of an SLM namespace, once allocated
	slmIOVA uint64                 // its bus address (set before slm is stored)
}

func newNamespace(id uint32, cfg NamespaceConfig) (*namespace, error) {
	lba := cfg.LBASize
	if lba == 0 {
		lba = 512
	}
	if lba != 512 && lba != 4096 {
		return nil, errors.Errorf("mock: namespace %d: LBA size %d, want 512 or 4096", id, lba)
	}
	ns := &namespace{id: id, csi: cfg.CSI, lbaSize: lba}
	for 1<<ns.shift < lba {
		ns.shift++
	}
	ns.ops = commandSet(cfg.CSI)
	if ns.ops == nil {
		return nil, errors.Errorf("mock: namespace %d: no command set registered for CSI %d", id, cfg.CSI)
	}
	size := cfg.Size
	switch cfg.Kind {
	case Memory:
		if size > maxSparse {
			return nil, errors.Errorf("mock: namespace %d: %d bytes exceeds the %d-byte limit of sparse memory", id, size, uint64(maxSparse))
		}
		ns.store = newSparse(int64(size))
	case Null:
		ns.null = true
		ns.store = nullStore{}
	case File:
		f, err := os.OpenFile(cfg.Path, os.O_RDWR, 0)
		if err != nil {
			return nil, errors.Wrapf(err, "mock: namespace %d", id)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, errors.Wrapf(err, "mock: namespace %d", id)
		}
		if !st.Mode().IsRegular() {
			f.Close()
			return nil, errors.Errorf("mock: namespace %d: %s is not a regular file", id, cfg.Path)
		}
		if size == 0 {
			size = (uint64(st.Size()) + uint64(lba) - 1) / uint64(lba) * uint64(lba)
		}
		ns.store = &fileStore{f: f}
	default:
		return nil, errors.Errorf("mock: namespace %d: unknown kind %d", id, cfg.Kind)
	}
	ns.blocks = size >> ns.shift
	if ns.blocks == 0 {
		ns.store.close()
		return nil, errors.Errorf("mock: namespace %d: size %d is smaller than one %d-byte block", id, size, lba)
	}
	return ns, nil
}

// sparse is memory allocated in 64 KiB chunks on first write, found through a
// two-level table of atomic pointers (no lock on the data path).
type sparse struct {
	size int64
	top  []atomic.Pointer[leaf]
}

const (
	chunkShift = 16
	chunkSize  = 1 << chunkShift
	leafBits   = 10
	maxSparse  = 1 << 46 // 64 TiB
)

type chunk [chunkSize]byte
type leaf [1 << leafBits]atomic.Pointer[chunk]

func newSparse(size int64) *sparse {
	nchunks := (size + chunkSize - 1) >> chunkShift
	return &sparse{size: size, top: make([]atomic.Pointer[leaf], (nchunks>>leafBits)+1)}
}

func (s *sparse) chunk(i int64, create bool) *chunk {
	t := &s.top[i>>leafBits]
	l := t.Load()
	if l == nil {
		if !create {
			return nil
		}
		t.CompareAndSwap(nil, new(leaf))
		l = t.Load()
	}
	p := &l[i&(1<<leafBits-1)]
	c := p.Load()
	if c == nil && create {
		p.CompareAndSwap(nil, new(chunk))
		c = p.Load()
	}
	return c
}

func (s *sparse) readAt(p []byte, off int64) error {
	for len(p) > 0 {
		i, o := off>>chunkShift, int(off&(chunkSize-1))
		n := min(len(p), chunkSize-o)
		if c := s.chunk(i, false); c != nil {
			copy(p[:n], c[o:])
		} else {
			clear(p[:n])
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

func (s *sparse) writeAt(p []byte, off int64) error {
	for len(p) > 0 {
		i, o := off>>chunkShift, int(off&(chunkSize-1))
		n := min(len(p), chunkSize-o)
		copy(s.chunk(i, true)[o:], p[:n])
		p, off = p[n:], off+int64(n)
	}
	return nil
}

func (s *sparse) zero(off, n int64) error {
	for n > 0 {
		i, o := off>>chunkShift, off&(chunkSize-1)
		k := min(n, chunkSize-o)
		if c := s.chunk(i, false); c != nil {
			if k == chunkSize {
				s.top[i>>leafBits].Load()[i&(1<<leafBits-1)].Store(nil)
			} else {
				clear(c[o : o+k])
			}
		}
		off, n = off+k, n-k
	}
	return nil
}

func (s *sparse) flush() error { return nil }
func (s *sparse) close() error { return nil }

// allocated returns the bytes of chunks allocated so far.
func (s *sparse) allocated() int64 {
	var n int64
	for i := range s.top {
		if l := s.top[i].Load(); l != nil {
			for j := range l {
				if l[j].Load() != nil {
					n += chunkSize
				}
			}
		}
	}
	return n
}

type nullStore struct{}

func (nullStore) readAt([]byte, int64) error  { return nil }
func (nullStore) writeAt([]byte, int64) error { return nil }
func (nullStore) zero(int64, int64) error     { return nil }
func (nullStore) flush() error                { return nil }
func (nullStore) close() error                { return nil }

type fileStore struct{ f *os.File }

func (s *fileStore) readAt(p []byte, off int64) error {
	n, err := s.f.ReadAt(p, off)
	if n < len(p) {
		// Past the end of a short file reads as zeroes.
		clear(p[n:])
		var st os.FileInfo
		if st, err = s.f.Stat(); err == nil && off+int64(n) >= st.Size() {
			return nil
		}
	}
	return err
}

func (s *fileStore) writeAt(p []byte, off int64) error {
	_, err := s.f.WriteAt(p, off)
	return err
}

var zeroBuf [chunkSize]byte

func (s *fileStore) zero(off, n int64) error {
	err := unix.Fallocate(int(s.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if err == nil {
		return nil
	}
	for n > 0 {
		k := min(n, chunkSize)
		if _, err := s.f.WriteAt(zeroBuf[:k], off); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

func (s *fileStore) flush() error { return s.f.Sync() }
func (s *fileStore) close() error { return s.f.Close() }

// Allocated returns the bytes of backing memory a sparse namespace has
// allocated so far (0 for other kinds or an unknown NSID).
func (c *Controller) Allocated(nsid uint32) int64 {
	if nsid == 0 || int(nsid) > len(c.namespaces) {
		return 0
	}
	if s, ok := c.namespaces[nsid-1].store.(*sparse); ok {
		return s.allocated()
	}
	return 0
}
