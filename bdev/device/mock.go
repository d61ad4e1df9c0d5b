package device

import (
	"github.com/bpfblk/bpfblk/bdev/device/demo"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
)

// mock: the embedded demo subsystem; mock:null: one null namespace.
func init() {
	Register(Driver{
		Kind: Mock, Usage: "mock",
		Match: func(a string) bool { return a == "mock" },
		Parse: func(string) (Spec, error) { return Spec{Kind: Mock}, nil },
		Key:   func(Spec) string { return "mock" },
		Open:  openDemo,
	})
	Register(Driver{
		Kind: MockNull, Usage: "mock:null",
		Match: func(a string) bool { return a == "mock:null" },
		Parse: func(string) (Spec, error) { return Spec{Kind: MockNull}, nil },
		Key:   func(Spec) string { return "mock:null" },
		Open: func(o *Opening, _ Spec) error {
			return o.AddMock(mock.Config{
				Serial: "BPFBLKNULL", Model: "bpfblk null controller",
				Namespaces: []mock.NamespaceConfig{{Kind: mock.Null, Size: 1 << 40, LBASize: 512}},
				Mode:       o.opts.Mode,
			})
		},
	})
}

// openDemo adds the demo controllers and writes their data.
func openDemo(o *Opening, _ Spec) error {
	first := 0
	for _, cfg := range demoControllers() {
		if cfg.Mode != mock.DeviceCore {
			cfg.Mode = o.opts.Mode
		}
		if err := o.AddMock(cfg); err != nil {
			return err
		}
		c := o.Set.Controllers[len(o.Set.Controllers)-1]
		var err error
		if first, err = demo.Write(c, first); err != nil {
			return err
		}
	}
	return nil
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
