package device

import (
	"sort"
	"strings"
	"sync"

	"github.com/pkg/errors"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
)

// A Driver opens the devices of one address scheme. Each transport or bdev
// module registers one from an init function (Register), the way
// database/sql drivers do; this package's own are in mock.go, file.go,
// csd.go, pci.go, uring.go and tcp.go.
type Driver struct {
	// Kind is the Kind of the specs Parse returns (a driver outside this
	// package picks a value above the built-in ones).
	Kind Kind
	// Usage is the address syntax, e.g. "file:PATH[,lba=512|4096]": the
	// error for an unknown address lists every driver's.
	Usage string
	// Match reports whether addr is of this driver's scheme.
	Match func(addr string) bool
	// Parse parses an address Match accepted.
	Parse func(addr string) (Spec, error)
	// Key identifies the device s names (see Spec.Key); nil: the absolute,
	// cleaned path of s with its symbolic links resolved.
	Key func(s Spec) string
	// Open opens the device of s into the set o builds.
	Open func(o *Opening, s Spec) error
}

var drivers struct {
	mu   sync.RWMutex
	list []*Driver
}

// Register makes the addresses d matches openable. It panics if d lacks
// Usage, Match, Parse or Open, or if another driver has the same Usage: a
// programming error found at init.
func Register(d Driver) {
	if d.Usage == "" || d.Match == nil || d.Parse == nil || d.Open == nil {
		panic("device: Register of an incomplete driver " + d.Usage)
	}
	drivers.mu.Lock()
	defer drivers.mu.Unlock()
	for _, o := range drivers.list {
		if o.Usage == d.Usage || o.Kind == d.Kind {
			panic("device: Register called twice for " + d.Usage)
		}
	}
	drivers.list = append(drivers.list, &d)
}

// lookup returns the driver of addr, or nil.
func lookup(addr string) *Driver {
	drivers.mu.RLock()
	defer drivers.mu.RUnlock()
	for _, d := range drivers.list {
		if d.Match(addr) {
			return d
		}
	}
	return nil
}

// driverOf returns the driver of specs of kind k, or nil.
func driverOf(k Kind) *Driver {
	drivers.mu.RLock()
	defer drivers.mu.RUnlock()
	for _, d := range drivers.list {
		if d.Kind == k {
			return d
		}
	}
	return nil
}

// Schemes returns the address syntax of every registered driver, sorted.
func Schemes() []string {
	drivers.mu.RLock()
	defer drivers.mu.RUnlock()
	u := make([]string, 0, len(drivers.list))
	for _, d := range drivers.list {
		u = append(u, d.Usage)
	}
	sort.Strings(u)
	return u
}

func unknown(addr string) error {
	return errors.Errorf("device %q: unknown address (want one of: %s)", addr, strings.Join(Schemes(), ", "))
}

// Opening is a Set being opened: what a Driver's Open adds devices to.
type Opening struct {
	// Set is the set being built.
	Set  *Set
	opts Options
	vals map[string]any
	fin  []finisher
}

type finisher struct {
	order int
	key   string
	f     func() error
}

// Options returns the options of the Open.
func (o *Opening) Options() Options { return o.opts }

// Bus returns the emulated bus of the set, made on first use: every
// emulated controller of one Open shares it.
func (o *Opening) Bus() *mock.Bus {
	if o.Set.Bus == nil {
		o.Set.Bus = mock.NewBus()
	}
	return o.Set.Bus
}

// AddMock makes an emulated controller of cfg on the set's bus, in the set's
// NVM subsystem, running programs with Options.Programs, and adds it.
func (o *Opening) AddMock(cfg mock.Config) error { return o.Set.addMock(o.Bus(), cfg, o.opts) }

// AddController initialises the driver on t and adds bdevs of its NVM
// namespaces. On failure t is closed.
func (o *Opening) AddController(t nvme.Transport) error { return o.Set.addController(t, o.opts) }

// AddBdev adds a bdev that is not an NVMe namespace, with a note for the
// user when note is not empty.
func (o *Opening) AddBdev(b *bdev.Bdev, note string) {
	o.Set.Bdevs = append(o.Set.Bdevs, b)
	if note != "" {
		o.Set.Notes = append(o.Set.Notes, note)
	}
}

// Value returns the value a driver keeps under key for this Open, made by
// mk the first time (e.g. the files that become namespaces of one
// controller).
func (o *Opening) Value(key string, mk func() any) any {
	if v, ok := o.vals[key]; ok {
		return v
	}
	if o.vals == nil {
		o.vals = map[string]any{}
	}
	v := mk()
	o.vals[key] = v
	return v
}

// Finally queues f, once per key, to run after every address has been
// opened, in increasing order (then in the order queued).
func (o *Opening) Finally(order int, key string, f func() error) {
	for _, x := range o.fin {
		if x.key == key {
			return
		}
	}
	o.fin = append(o.fin, finisher{order, key, f})
}

func (o *Opening) finish() error {
	sort.SliceStable(o.fin, func(i, j int) bool { return o.fin[i].order < o.fin[j].order })
	for _, x := range o.fin {
		if err := x.f(); err != nil {
			return err
		}
	}
	return nil
}
