package engine

import (
	"fmt"
	"math"
	"math/bits"
	"sort"
	"strings"

	"github.com/pkg/errors"

	"github.com/bpfblk/bpfblk/compute/verifier"
)

// Limits on a single map, checked when a program is loaded. They are the
// limits Linux enforces where it has one.
const (
	// MaxKeySize is the largest key, in bytes: keys are passed from the
	// 512-byte BPF stack (Linux refuses hash keys over MAX_BPF_STACK).
	MaxKeySize = 512
	// MaxValueSize is the largest value, in bytes: Linux refuses array
	// values over KMALLOC_MAX_SIZE (4 MiB with 4 KiB pages), which also
	// bounds global sections (.data, .bss, .rodata).
	MaxValueSize = 4 << 20
	// MaxHashEntries is the largest max_entries of a hash map (its slot
	// table has twice as many slots, indexed by 32-bit numbers).
	MaxHashEntries = 1 << 30
	// MaxMapValueBytes is the largest value memory of one map: it is one
	// region of the engine's address space, whose offsets are 32 bits.
	MaxMapValueBytes = 1 << 32
)

// DefaultMapMemory is the default of LoadOptions.MapMemory: the host memory
// all instances of a program may spend on maps, 1 GiB.
const DefaultMapMemory = 1 << 30

// mapOverhead is charged per map for its bookkeeping (structs, slice headers).
const mapOverhead = 256

// mulSat returns a*b, or math.MaxInt64 when that overflows int64.
func mulSat(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	if hi != 0 || lo > math.MaxInt64 {
		return math.MaxInt64
	}
	return lo
}

// addSat returns a+b, or math.MaxInt64 when that overflows int64.
func addSat(a, b uint64) uint64 {
	s, c := bits.Add64(a, b, 0)
	if c != 0 || s > math.MaxInt64 {
		return math.MaxInt64
	}
	return s
}

// Memory returns the host memory, in bytes, that one instance of the map
// allocates: value size x max entries for an array (global sections are
// one-entry arrays); for a hash map, max entries x (key + value size + a
// 4-byte free-list index) plus 5 bytes per slot of its table (twice max
// entries, rounded up to a power of two). The arithmetic saturates at
// math.MaxInt64 instead of overflowing.
func (s *MapSpec) Memory() int64 {
	n := uint64(s.MaxEntries)
	m := mulSat(n, uint64(s.ValueSize))
	if s.Kind == verifier.MapHash {
		m = addSat(m, mulSat(n, uint64(s.KeySize)+4))
		m = addSat(m, mulSat(hashSlots(s.MaxEntries), 5))
	}
	return int64(addSat(m, mapOverhead))
}

// describe names the map and its shape for error messages.
func (s *MapSpec) describe() string {
	kind := "array"
	if s.Kind == verifier.MapHash {
		kind = "hash"
	}
	return fmt.Sprintf("%s map %s (%d entries, key %d B, value %d B)", kind, s.Name, s.MaxEntries, s.KeySize, s.ValueSize)
}

// checkMapSize refuses a map whose shape alone is unreasonable, before
// anything is allocated for it.
func checkMapSize(s *MapSpec) error {
	switch {
	case s.KeySize == 0 || s.ValueSize == 0 || s.MaxEntries == 0:
		return errors.Errorf("%s: key size, value size and max entries must be non-zero", s.describe())
	case s.KeySize > MaxKeySize:
		return errors.Errorf("%s: key size over %d B", s.describe(), MaxKeySize)
	case s.ValueSize > MaxValueSize:
		return errors.Errorf("%s: value size over %d B (4 MiB)", s.describe(), MaxValueSize)
	case s.Kind == verifier.MapHash && s.MaxEntries > MaxHashEntries:
		return errors.Errorf("%s: more than %d entries", s.describe(), MaxHashEntries)
	case mulSat(uint64(s.ValueSize), uint64(s.MaxEntries)) > MaxMapValueBytes:
		return errors.Errorf("%s: %s of values, over the %s a map's memory region holds",
			s.describe(), formatBytes(int64(mulSat(uint64(s.ValueSize), uint64(s.MaxEntries)))), formatBytes(MaxMapValueBytes))
	case uint64(s.Memory()) > math.MaxInt:
		return errors.Errorf("%s: %s does not fit in this machine's address space", s.describe(), formatBytes(s.Memory()))
	}
	return nil
}

// MapMemory returns the host memory the program's maps take: shared is
// allocated once per Executable (read-only maps, which every instance
// shares, and the initial contents of every map), perInstance by every
// Instance (its own copy of each writable map). Instances-many instances
// take shared + instances x perInstance bytes.
func (p *Program) MapMemory() (shared, perInstance int64) {
	return mapMemory(p.Maps)
}

func mapMemory(maps []MapSpec) (shared, perInstance int64) {
	var sh, per uint64
	for i := range maps {
		m := &maps[i]
		sh = addSat(sh, max(uint64(len(m.Init)), m.initLen))
		if m.ReadOnly {
			sh = addSat(sh, uint64(m.Memory()))
		} else {
			per = addSat(per, uint64(m.Memory()))
		}
	}
	return int64(sh), int64(per)
}

// MapMemoryLimit returns the limit the program was loaded with
// (LoadOptions.MapMemory, DefaultMapMemory when not set).
func (p *Program) MapMemoryLimit() int64 { return p.mapLimit }

// CheckInstances returns a *MapMemoryError when n instances of the program
// would take more map memory than its limit (MapMemoryLimit). Callers that
// create several instances of an Executable (one per core) check the number
// first; loading checked LoadOptions.Instances (at least one).
func (p *Program) CheckInstances(n int) error {
	return checkMapMemory(p.Name, p.Maps, n, p.mapLimit)
}

func checkMapMemory(name string, maps []MapSpec, n int, limit int64) error {
	if n < 1 {
		n = 1
	}
	shared, per := mapMemory(maps)
	need := addSat(uint64(shared), mulSat(uint64(per), uint64(n)))
	if need <= uint64(limit) {
		return nil
	}
	return &MapMemoryError{Program: name, Instances: n, Need: int64(need), Limit: limit, maps: maps}
}

// MapMemoryError is returned (wrapped) when a program's maps, times the
// instances asked for, need more host memory than the limit allows.
type MapMemoryError struct {
	Program   string
	Instances int   // instances asked for
	Need      int64 // bytes they would take (saturated at math.MaxInt64)
	Limit     int64 // LoadOptions.MapMemory
	maps      []MapSpec
}

// Error names the largest maps with their shapes and sizes, and the limit.
func (e *MapMemoryError) Error() string {
	var b strings.Builder
	inst := "1 instance"
	if e.Instances != 1 {
		inst = fmt.Sprintf("%d instances", e.Instances)
	}
	fmt.Fprintf(&b, "program %s: maps need %s for %s, over the map memory limit of %s", e.Program, formatBytes(e.Need), inst, formatBytes(e.Limit))
	idx := make([]int, len(e.maps))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return e.maps[idx[a]].Memory() > e.maps[idx[b]].Memory() })
	const show = 4
	for k, i := range idx {
		if k == show {
			fmt.Fprintf(&b, "; %d more", len(idx)-show)
			break
		}
		m := &e.maps[i]
		per := "each"
		if m.ReadOnly {
			per = "shared"
		}
		sep := ": "
		if k > 0 {
			sep = ", "
		}
		fmt.Fprintf(&b, "%s%s %s %s", sep, m.describe(), formatBytes(m.Memory()), per)
	}
	return b.String()
}

// formatBytes formats a byte count with a binary unit (B, KiB ... EiB).
func formatBytes(n int64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, u := float64(n)/1024, 0
	for v >= 1024 && u < len(units)-1 {
		v /= 1024
		u++
	}
	s := fmt.Sprintf("%.1f", v)
	s = strings.TrimSuffix(s, ".0")
	return s + " " + units[u:u+1] + "iB"
}
