package device

import (
	"strings"

	"github.com/pkg/errors"

	"github.com/bpfblk/bpfblk/nvme/pci"
	"github.com/bpfblk/bpfblk/nvme/vfio"
)

// pci:DDDD:BB:DD.F: a real controller through VFIO.
func init() {
	Register(Driver{
		Kind: PCI, Usage: "pci:DDDD:BB:DD.F",
		Match: func(a string) bool { return strings.HasPrefix(a, pci.Scheme) },
		Parse: func(s string) (Spec, error) {
			a, err := pci.ParseAddr(s)
			if err != nil {
				return Spec{}, errors.Wrapf(err, "device %q", s)
			}
			return Spec{Kind: PCI, Addr: a.String()}, nil
		},
		Key: func(s Spec) string { return pci.Scheme + s.Addr },
		Open: func(o *Opening, s Spec) error {
			d, err := vfio.Open(s.Addr, nil)
			if err != nil {
				return errors.Wrapf(err, "device pci:%s", s.Addr)
			}
			return o.AddController(d)
		},
	})
}
