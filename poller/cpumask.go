package poller

import (
	"math/big"
	"runtime"
	"strconv"
	"strings"

	"github.com/klauspost/cpuid/v2"
	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// MaxCores is the highest core number (exclusive) that a core mask may name.
const MaxCores = 1024

// ParseCoreMask parses a core set in one of SPDK's forms and returns the core
// numbers in increasing order:
//
//	0x3        a hexadecimal bit mask (bit n = core n)
//	0-1        a range
//	0,2        a list; lists may mix ranges: 0-3,8,10-11
//	[0,2-3]    a list in brackets, as spdk_app accepts
//
// It checks only the syntax; ValidateCores checks that the cores exist.
func ParseCoreMask(s string) ([]int, error) {
	orig := s
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("poller: empty core mask")
	}
	if strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X") {
		return parseHexMask(orig, s[2:])
	}
	if strings.HasPrefix(s, "[") {
		if !strings.HasSuffix(s, "]") {
			return nil, errors.Errorf("poller: core mask %q: missing ']'", orig)
		}
		s = s[1 : len(s)-1]
	}
	var seen [MaxCores]bool
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := parseCore(orig, lo)
		if err != nil {
			return nil, err
		}
		b := a
		if isRange {
			if b, err = parseCore(orig, hi); err != nil {
				return nil, err
			}
			if b < a {
				return nil, errors.Errorf("poller: core mask %q: range %q runs backwards", orig, part)
			}
		}
		for c := a; c <= b; c++ {
			if seen[c] {
				return nil, errors.Errorf("poller: core mask %q: core %d named twice", orig, c)
			}
			seen[c] = true
		}
	}
	var cores []int
	for c, ok := range seen {
		if ok {
			cores = append(cores, c)
		}
	}
	return cores, nil
}

func parseCore(mask, s string) (int, error) {
	s = strings.TrimSpace(s)
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, errors.Errorf("poller: core mask %q: %q is not a core number", mask, s)
	}
	if n >= MaxCores {
		return 0, errors.Errorf("poller: core mask %q: core %d is beyond the limit of %d", mask, n, MaxCores)
	}
	return n, nil
}

func parseHexMask(orig, hex string) ([]int, error) {
	v, ok := new(big.Int).SetString(hex, 16)
	if !ok || hex == "" || strings.ContainsAny(hex, "+-") {
		return nil, errors.Errorf("poller: core mask %q: not a hexadecimal mask", orig)
	}
	if v.BitLen() > MaxCores {
		return nil, errors.Errorf("poller: core mask %q: names cores beyond the limit of %d", orig, MaxCores)
	}
	var cores []int
	for c := 0; c < v.BitLen(); c++ {
		if v.Bit(c) == 1 {
			cores = append(cores, c)
		}
	}
	if len(cores) == 0 {
		return nil, errors.Errorf("poller: core mask %q selects no core", orig)
	}
	return cores, nil
}

// AvailableCores returns the cores this process may run on (its affinity mask),
// in increasing order.
func AvailableCores() ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, errors.Wrap(err, "poller: sched_getaffinity")
	}
	var cores []int
	for c := 0; c < MaxCores; c++ {
		if set.IsSet(c) {
			cores = append(cores, c)
		}
	}
	return cores, nil
}

// ValidateCores checks that every core is one this process may run on.
func ValidateCores(cores []int) error {
	avail, err := AvailableCores()
	if err != nil {
		return err
	}
	ok := make(map[int]bool, len(avail))
	for _, c := range avail {
		ok[c] = true
	}
	for _, c := range cores {
		if !ok[c] {
			return errors.Errorf("poller: core %d is not available to this process (available: %s)", c, FormatCores(avail))
		}
	}
	return nil
}

// FormatCores renders cores in the list form ParseCoreMask accepts, with
// consecutive runs folded into ranges: [0 1 2 5] becomes "0-2,5".
func FormatCores(cores []int) string {
	var b strings.Builder
	for i := 0; i < len(cores); {
		j := i
		for j+1 < len(cores) && cores[j+1] == cores[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(cores[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(cores[j]))
		}
		i = j + 1
	}
	return b.String()
}

// Topology describes the CPU the reactors run on.
type Topology struct {
	Brand          string   // CPU brand string
	Vendor         string   // CPU vendor
	LogicalCores   int      // logical cores (hardware threads) in the machine
	PhysicalCores  int      // physical cores, 0 when the CPU does not say
	ThreadsPerCore int      // hardware threads per physical core
	CacheLine      int      // cache line size in bytes
	Available      []int    // cores this process may run on
	Features       []string // notable instruction-set features (e.g. AVX2, BMI2)
}

// ReadTopology reports the CPU's features and core counts from CPUID, and the
// cores available to this process from its affinity mask.
func ReadTopology() (Topology, error) {
	avail, err := AvailableCores()
	if err != nil {
		return Topology{}, err
	}
	c := cpuid.CPU
	t := Topology{
		Brand:          c.BrandName,
		Vendor:         c.VendorString,
		LogicalCores:   c.LogicalCores,
		PhysicalCores:  c.PhysicalCores,
		ThreadsPerCore: c.ThreadsPerCore,
		CacheLine:      c.CacheLine,
		Available:      avail,
	}
	if t.LogicalCores == 0 {
		// Some hypervisors hide the topology leaves; the OS still knows.
		t.LogicalCores = runtime.NumCPU()
	}
	if t.CacheLine == 0 {
		t.CacheLine = 64
	}
	for _, f := range []cpuid.FeatureID{cpuid.SSE42, cpuid.AVX, cpuid.AVX2, cpuid.AVX512F, cpuid.BMI1, cpuid.BMI2, cpuid.POPCNT, cpuid.CX16, cpuid.ASIMD, cpuid.CRC32} {
		if c.Supports(f) {
			t.Features = append(t.Features, f.String())
		}
	}
	return t, nil
}

// pinThread restricts the calling OS thread to core.
func pinThread(core int) error {
	var set unix.CPUSet
	set.Set(core)
	return errors.Wrapf(unix.SchedSetaffinity(0, &set), "poller: pin thread to core %d", core)
}
