// Package device opens the devices of the CLI contract (cmd/bpfblk's package
// doc) by address and makes bdevs of their namespaces:
//
//	mock                      the embedded demo subsystem (emulated controllers)
//	mock:null                 an emulated controller with one null namespace
//	file:PATH[,lba=512|4096]  an emulated controller namespace backed by a file;
//	                          several file: devices become namespaces of one controller
//	pci:0000:01:00.0          a real controller through VFIO
//	uring:PATH[,sqpoll][,buffered][,lba=512|4096]
//	                          a kernel block device or a file through io_uring
//	tcp://HOST:PORT[/NQN]     a subsystem over NVMe/TCP; without NQN, every NVM
//	                          subsystem the discovery controller at HOST:PORT lists
//	csd[:N]                   an emulated computational storage controller (CP and
//	                          SLM command sets) in the subsystem of the other devices;
//	                          csd:1, csd:2, ... add more than one
//
// Every emulated controller of one Open shares one emulated bus, so they can
// reach each other's memory as controllers on one PCIe fabric do, and one
// NVM subsystem (one SUBNQN, Identify CMIC bit 1), so a compute controller
// reaches the namespaces of all of them.
package device

import (
	stderrors "errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/bdev/uring"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
	"github.com/bpfblk/bpfblk/nvme/pci"
	"github.com/bpfblk/bpfblk/nvme/vfio"
	"github.com/pkg/errors"
)

// Kind is the kind of a device address.
type Kind int

// Device kinds.
const (
	Mock Kind = iota
	MockNull
	File
	PCI
	Uring
	TCP
	CSD
)

// Spec is a parsed device address.
type Spec struct {
	Kind    Kind
	Path    string // File
	LBASize int    // File: 512 or 4096
	Addr    string // PCI, canonical "0000:01:00.0"; TCP, "HOST:PORT"
	NQN     string // TCP: the subsystem, or "" to discover them
	Uring   uring.Config
	Index   int // CSD: N of csd:N (csd is csd:0)
}

// Default is the device used when none is given.
const Default = "mock"

// Parse parses one device address.
func Parse(s string) (Spec, error) {
	switch {
	case s == "mock":
		return Spec{Kind: Mock}, nil
	case s == "mock:null":
		return Spec{Kind: MockNull}, nil
	case strings.HasPrefix(s, "file:"):
		rest := strings.TrimPrefix(s, "file:")
		path, opts, _ := strings.Cut(rest, ",")
		if path == "" {
			return Spec{}, errors.Errorf("device %q: file: needs a path", s)
		}
		spec := Spec{Kind: File, Path: path, LBASize: 512}
		if opts != "" {
			k, v, ok := strings.Cut(opts, "=")
			n, err := strconv.Atoi(v)
			if !ok || k != "lba" || err != nil || (n != 512 && n != 4096) {
				return Spec{}, errors.Errorf("device %q: option %q: want lba=512 or lba=4096", s, opts)
			}
			spec.LBASize = n
		}
		return spec, nil
	case strings.HasPrefix(s, uring.Scheme):
		c, err := uring.ParseAddr(strings.TrimPrefix(s, uring.Scheme))
		if err != nil {
			return Spec{}, err
		}
		return Spec{Kind: Uring, Path: c.Path, Uring: c}, nil
	case s == "csd" || strings.HasPrefix(s, "csd:"):
		n := 0
		if v, ok := strings.CutPrefix(s, "csd:"); ok {
			var err error
			if n, err = strconv.Atoi(v); err != nil || n < 0 || n > 63 || strconv.Itoa(n) != v {
				return Spec{}, errors.Errorf("device %q: want csd or csd:N with N from 0 to 63", s)
			}
		}
		return Spec{Kind: CSD, Index: n}, nil
	case strings.HasPrefix(s, pci.Scheme):
		a, err := pci.ParseAddr(s)
		if err != nil {
			return Spec{}, errors.Wrapf(err, "device %q", s)
		}
		return Spec{Kind: PCI, Addr: a.String()}, nil
	case strings.HasPrefix(s, tcpScheme):
		return parseTCP(s)
	}
	return Spec{}, errors.Errorf("device %q: unknown address (want mock, mock:null, file:PATH[,lba=512|4096], pci:DDDD:BB:DD.F, uring:PATH, tcp://HOST:PORT[/NQN] or csd[:N])", s)
}

// ErrDuplicate marks an Open that names one device twice: the same address,
// or two addresses of one device, such as two file: paths of one file. A
// device opened twice would show its namespaces twice, and a scan would count
// every match twice.
var ErrDuplicate = errors.New("device given twice")

// Key identifies the device an address names: two addresses name the same
// device exactly when their keys are equal. A file: path is made absolute and
// cleaned (a uring: path alike, so file:X and uring:X are one device), and
// its symbolic links are resolved when the file exists; its LBA
// size does not change which file it is.
func (s Spec) Key() string {
	switch s.Kind {
	case Mock:
		return "mock"
	case MockNull:
		return "mock:null"
	case PCI:
		return pci.Scheme + s.Addr
	case TCP:
		return tcpScheme + s.Addr + "/" + s.NQN
	case CSD:
		return "csd:" + strconv.Itoa(s.Index)
	}
	p, err := filepath.Abs(s.Path)
	if err != nil {
		p = filepath.Clean(s.Path)
	}
	if r, err := filepath.EvalSymlinks(p); err == nil {
		p = r
	}
	return "file:" + p
}

// Options tune Open.
type Options struct {
	// Mode runs emulated controllers inline (default) or on device cores.
	Mode mock.Mode
	// NVMe tunes the driver of every controller.
	NVMe nvme.Options
	// Programs runs the programs of the emulated computational storage
	// controllers (csd, and the one of the demo subsystem): the emulator
	// has no engine of its own (compute/csd.Runner is the project's). Nil:
	// they refuse every program.
	Programs mock.ProgramRunner
}

// Set is the open devices: controllers and the bdevs of their namespaces. It
// owns them all; Close releases them.
type Set struct {
	// Bdevs are the namespaces' bdevs, in the order of the addresses.
	Bdevs []*bdev.Bdev
	// Controllers are the initialised controllers, in the same order.
	Controllers []*nvme.Controller
	// Bus is the emulated bus of the mock controllers (nil if there are none).
	Bus *mock.Bus
	// Notes say what differs from the best case for a device (a uring
	// device doing buffered I/O), one line each, for a person to read.
	Notes []string
	// Lengths are the data bytes of the bdevs whose last block is partial:
	// file: devices whose size is not a multiple of their LBA size. Their
	// namespace ends with that block, read as the file's tail and zeroes.
	Lengths map[*bdev.Bdev]uint64
	// Subsystem is the NQN of the NVM subsystem of the mock controllers.
	Subsystem string
}

// subsystems numbers the NVM subsystems of the Opens of this process.
var subsystems atomic.Int64

// Open opens every address (Default when addrs is empty).
func Open(addrs []string, opts Options) (_ *Set, err error) {
	if len(addrs) == 0 {
		addrs = []string{Default}
	}
	var specs []Spec
	seen := make(map[string]string, len(addrs))
	for _, a := range addrs {
		s, err := Parse(a)
		if err != nil {
			return nil, err
		}
		k := s.Key()
		if first, dup := seen[k]; dup {
			if first == a {
				return nil, fmt.Errorf("%w: %q", ErrDuplicate, a)
			}
			return nil, fmt.Errorf("%w: %q and %q are both %s", ErrDuplicate, first, a, k)
		}
		seen[k] = a
		specs = append(specs, s)
	}
	set := &Set{Subsystem: fmt.Sprintf("nqn.2026-01.io.bpfblk:subsystem.%d", subsystems.Add(1))}
	defer func() {
		if err != nil {
			set.Close()
		}
	}()
	bus := func() *mock.Bus {
		if set.Bus == nil {
			set.Bus = mock.NewBus()
		}
		return set.Bus
	}
	var files []mock.NamespaceConfig
	nUring := 0
	var sizes []uint64
	var csds []Spec
	for _, s := range specs {
		switch s.Kind {
		case Mock:
			first := 0
			for _, cfg := range demoControllers() {
				if cfg.Mode != mock.DeviceCore {
					cfg.Mode = opts.Mode
				}
				if err := set.addMock(bus(), cfg, opts); err != nil {
					return nil, err
				}
				c := set.Controllers[len(set.Controllers)-1]
				if first, err = writeDemoData(c, first); err != nil {
					return nil, err
				}
			}
		case MockNull:
			cfg := mock.Config{
				Serial: "BPFBLKNULL", Model: "bpfblk null controller",
				Namespaces: []mock.NamespaceConfig{{Kind: mock.Null, Size: 1 << 40, LBASize: 512}},
				Mode:       opts.Mode,
			}
			if err := set.addMock(bus(), cfg, opts); err != nil {
				return nil, err
			}
		case File:
			fi, err := os.Stat(s.Path)
			if err != nil {
				return nil, errors.Wrapf(err, "device file:%s", s.Path)
			}
			if !fi.Mode().IsRegular() {
				return nil, errors.Errorf("device file:%s: not a regular file", s.Path)
			}
			if fi.Size() == 0 {
				return nil, errors.Errorf("device file:%s: the file is empty", s.Path)
			}
			files = append(files, mock.NamespaceConfig{Kind: mock.File, Path: s.Path, LBASize: s.LBASize})
			sizes = append(sizes, uint64(fi.Size()))
		case PCI:
			if err := set.addPCI(s.Addr, opts); err != nil {
				return nil, err
			}
		case Uring:
			d, err := uring.Open(fmt.Sprintf("uring%d", nUring), s.Uring)
			if err != nil {
				return nil, err
			}
			nUring++
			set.Bdevs = append(set.Bdevs, d.Bdev)
			if d.Note != "" {
				set.Notes = append(set.Notes, d.Note)
			}
		case TCP:
			if err := set.addTCP(s, opts); err != nil {
				return nil, err
			}
		case CSD:
			csds = append(csds, s)
		}
	}
	if len(files) > 0 {
		cfg := mock.Config{Serial: "BPFBLKFILE", Model: "bpfblk file-backed controller", Namespaces: files, Mode: opts.Mode}
		first := len(set.Bdevs)
		if err := set.addMock(bus(), cfg, opts); err != nil {
			return nil, err
		}
		// One NVM namespace per file, in order.
		for i, b := range set.Bdevs[first:] {
			if i < len(sizes) && sizes[i]%uint64(b.BlockSize()) != 0 {
				if set.Lengths == nil {
					set.Lengths = map[*bdev.Bdev]uint64{}
				}
				set.Lengths[b] = sizes[i]
			}
		}
	}
	for _, s := range csds {
		if err := set.addMock(bus(), csdController(s.Index), opts); err != nil {
			return nil, err
		}
	}
	return set, nil
}

// csdController describes the computational storage controller of csd:n:
// a compute namespace and 64 MiB of subsystem local memory, running
// programs on one compute core beside its own device core (a second device
// brings a second compute core).
func csdController(n int) mock.Config {
	return mock.Config{
		Serial: fmt.Sprintf("BPFBLKCSDX%d", n), Model: "bpfblk computational storage controller",
		Namespaces: []mock.NamespaceConfig{
			{Kind: mock.Memory, Size: 4096, CSI: nvme.CSICP},
			{Kind: mock.Memory, Size: 64 << 20, CSI: nvme.CSISLM},
		},
		Mode:    mock.DeviceCore,
		Compute: &mock.ComputeConfig{Cores: 1},
	}
}

// demoControllers describes the embedded demo subsystem: two data
// controllers, one with namespaces of both LBA sizes, holding the demo logs,
// and a computational storage controller (a compute namespace and 64 MiB of
// subsystem local memory, running programs on its own device core) that can
// reach them.
func demoControllers() []mock.Config {
	return []mock.Config{
		{
			Serial: "BPFBLKDEMO0", Model: "bpfblk demo controller",
			Namespaces: []mock.NamespaceConfig{
				{Kind: mock.Memory, Size: 16 << 20, LBASize: 512},
				{Kind: mock.Memory, Size: 16 << 20, LBASize: 4096},
			},
		},
		{
			Serial: "BPFBLKDEMO1", Model: "bpfblk demo controller",
			Namespaces: []mock.NamespaceConfig{
				{Kind: mock.Memory, Size: 24 << 20, LBASize: 4096},
			},
			CMBSize: 16 << 20,
		},
		{
			Serial: "BPFBLKCSD0", Model: "bpfblk computational storage controller",
			Namespaces: []mock.NamespaceConfig{
				{Kind: mock.Memory, Size: 4096, CSI: nvme.CSICP},
				{Kind: mock.Memory, Size: 64 << 20, CSI: nvme.CSISLM},
			},
			Mode: mock.DeviceCore,
		},
	}
}

func (set *Set) addMock(bus *mock.Bus, cfg mock.Config, opts Options) error {
	cfg.Subsystem = set.Subsystem
	var cc mock.ComputeConfig
	if cfg.Compute != nil {
		cc = *cfg.Compute
	}
	cc.Runner = opts.Programs
	cfg.Compute = &cc
	mc, err := mock.NewController(bus, cfg)
	if err != nil {
		return errors.Wrap(err, "device mock")
	}
	return set.addController(mc, opts)
}

func (set *Set) addPCI(addr string, opts Options) error {
	d, err := vfio.Open(addr, nil)
	if err != nil {
		return errors.Wrapf(err, "device pci:%s", addr)
	}
	return set.addController(d, opts)
}

// addController initialises the driver on t and makes bdevs of its NVM
// namespaces. On failure t is closed.
func (set *Set) addController(t nvme.Transport, opts Options) error {
	c, err := nvme.NewController(t, opts.NVMe)
	if err != nil {
		t.Close()
		return errors.Wrapf(err, "device %s", t.Name())
	}
	set.Controllers = append(set.Controllers, c)
	for _, ns := range c.Namespaces() {
		if ns.CSI != nvme.CSINVM {
			continue
		}
		b, err := bdev.NewNVMe(fmt.Sprintf("%sn%d", c.Name(), ns.ID), c, ns)
		if err != nil {
			return err
		}
		set.Bdevs = append(set.Bdevs, b)
	}
	return nil
}

// Close closes the bdevs, then the controllers and their transports. A
// controller whose queue pairs channels of its bdevs still hold (a channel
// not closed, or whose Close failed) stays open: closing it would complete
// the channels' I/Os on the caller's goroutine, under code that may still
// use them. Close says so in its error and keeps such controllers (and bdevs
// that failed to close) in the set, so that it may be called again once
// the channels are closed.
func (set *Set) Close() error {
	var errs []error
	var bdevs []*bdev.Bdev
	for _, b := range set.Bdevs {
		if err := b.Close(); err != nil {
			bdevs = append(bdevs, b)
			errs = append(errs, err)
		}
	}
	var kept []*nvme.Controller
	for i := len(set.Controllers) - 1; i >= 0; i-- {
		c := set.Controllers[i]
		if n := bdev.NVMeQueuePairs(c); n > 0 {
			kept = append([]*nvme.Controller{c}, kept...)
			errs = append(errs, errors.Errorf("device %s: not closed: bdev channels still hold %d of its I/O queue pairs", c.Name(), n))
			continue
		}
		if err := c.Close(); err != nil {
			errs = append(errs, err)
		}
		if err := c.Transport().Close(); err != nil {
			errs = append(errs, err)
		}
	}
	set.Bdevs, set.Controllers = bdevs, kept
	return stderrors.Join(errs...)
}
