package bench

import (
	"math/rand/v2"
	"time"

	"github.com/pkg/errors"
)

// Pattern is an I/O pattern, named as in fio and spdk_nvme_perf.
type Pattern string

// The patterns `bpfblk perf -w` accepts.
const (
	Read      Pattern = "read"      // sequential reads
	Write     Pattern = "write"     // sequential writes
	RandRead  Pattern = "randread"  // uniformly random reads
	RandWrite Pattern = "randwrite" // uniformly random writes
	RW        Pattern = "rw"        // sequential, ReadPercent reads and the rest writes
	RandRW    Pattern = "randrw"    // random, ReadPercent reads and the rest writes
)

// Patterns lists every pattern in the order the CLI documents them.
var Patterns = []Pattern{Read, Write, RandRead, RandWrite, RW, RandRW}

// Limits on a workload; beyond them the request is a mistake, not a benchmark.
const (
	MaxQueueDepth = 65536
	MaxBlockSize  = 128 << 20
)

// Workload describes what each job submits.
type Workload struct {
	Pattern     Pattern
	ReadPercent int           // for rw and randrw: share of reads, 0-100
	BlockSize   int           // bytes per I/O
	QueueDepth  int           // I/Os in flight per job
	Duration    time.Duration // how long to run
}

// Validate checks the workload on its own; a target's block size is checked
// by CheckTarget.
func (w Workload) Validate() error {
	known := false
	for _, p := range Patterns {
		known = known || p == w.Pattern
	}
	if !known {
		return errors.Errorf("unknown workload %q (want one of read, write, randread, randwrite, rw, randrw)", w.Pattern)
	}
	if w.ReadPercent < 0 || w.ReadPercent > 100 {
		return errors.Errorf("read percentage %d is outside 0-100", w.ReadPercent)
	}
	if w.QueueDepth < 1 || w.QueueDepth > MaxQueueDepth {
		return errors.Errorf("queue depth %d is outside 1-%d", w.QueueDepth, MaxQueueDepth)
	}
	if w.BlockSize < 1 || w.BlockSize > MaxBlockSize {
		return errors.Errorf("block size %d is outside 1-%d bytes", w.BlockSize, MaxBlockSize)
	}
	if w.Duration <= 0 {
		return errors.Errorf("run time %v is not positive", w.Duration)
	}
	return nil
}

// CheckTarget checks that the workload fits a target with the given LBA size
// and capacity in LBAs.
func (w Workload) CheckTarget(name string, lbaSize int, lbas uint64) error {
	if lbaSize <= 0 || w.BlockSize%lbaSize != 0 {
		return errors.Errorf("%s: block size %d is not a multiple of its %d-byte LBA", name, w.BlockSize, lbaSize)
	}
	if uint64(w.BlockSize/lbaSize) > lbas {
		return errors.Errorf("%s: block size %d exceeds its capacity of %d LBAs", name, w.BlockSize, lbas)
	}
	return nil
}

// Offsets generates the I/Os of one job: which block to touch and whether to
// read or write it. It is owned by one goroutine and never allocates after
// NewOffsets.
//
// Its state (the generator's, next) is written on every I/O by the job's
// core, so it lives inside the Offsets, padded off the cache lines of
// whatever is allocated next to it (such as another core's Offsets).
type Offsets struct {
	_        [128]byte
	random   bool
	mixed    bool
	write    bool // the direction when not mixed
	readPct  uint64
	units    uint64 // number of BlockSize units in the range
	next     uint64
	pcg      rand.PCG
	rng      *rand.Rand // over pcg
	lbasPer  uint64
	firstLBA uint64
	_        [128]byte
}

// NewOffsets returns the generator for a job over lbas LBAs of lbaSize bytes
// starting at firstLBA; seed makes the random sequence repeatable.
func NewOffsets(w Workload, lbaSize int, firstLBA, lbas uint64, seed uint64) *Offsets {
	per := uint64(w.BlockSize / lbaSize)
	o := &Offsets{
		random:   w.Pattern == RandRead || w.Pattern == RandWrite || w.Pattern == RandRW,
		mixed:    w.Pattern == RW || w.Pattern == RandRW,
		write:    w.Pattern == Write || w.Pattern == RandWrite,
		readPct:  uint64(w.ReadPercent),
		units:    max(lbas/per, 1),
		lbasPer:  per,
		firstLBA: firstLBA,
	}
	o.pcg.Seed(seed, seed^0x9e3779b97f4a7c15)
	o.rng = rand.New(&o.pcg)
	return o
}

// Next returns the starting LBA and LBA count of the next I/O, and whether it
// is a read.
func (o *Offsets) Next() (lba, count uint64, read bool) {
	var u uint64
	if o.random {
		u = o.rng.Uint64N(o.units)
	} else {
		u = o.next
		o.next++
		if o.next == o.units {
			o.next = 0
		}
	}
	read = !o.write
	if o.mixed {
		read = o.rng.Uint64N(100) < o.readPct
	}
	return o.firstLBA + u*o.lbasPer, o.lbasPer, read
}
