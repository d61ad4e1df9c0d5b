package device

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/pkg/errors"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
)

// csd[:N]: emulated computational storage controllers, made after every
// other address is opened, in the set's subsystem.
func init() {
	Register(Driver{
		Kind: CSD, Usage: "csd[:N]",
		Match: func(a string) bool { return a == "csd" || strings.HasPrefix(a, "csd:") },
		Parse: parseCSD,
		Key:   func(s Spec) string { return "csd:" + strconv.Itoa(s.Index) },
		Open: func(o *Opening, s Spec) error {
			o.Finally(1, "csd:"+strconv.Itoa(s.Index), func() error { return o.AddMock(csdController(s.Index)) })
			return nil
		},
	})
}

func parseCSD(s string) (Spec, error) {
	n := 0
	if v, ok := strings.CutPrefix(s, "csd:"); ok {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 0 || n > 63 || strconv.Itoa(n) != v {
			return Spec{}, errors.Errorf("device %q: want csd or csd:N with N from 0 to 63", s)
		}
	}
	return Spec{Kind: CSD, Index: n}, nil
}

// csdController describes the computational storage controller of csd:n:
// a compute namespace and 64 MiB of subsystem local memory, running
// programs on one compute core beside its own device core (a second device
// brings a second compute core), with a copy engine per queue for Memory
// Copy. Its compute core runs as fast as the host's CPUs run it (no
// emulated rate, mock.ComputeConfig.Rate), so its run time is the
// emulator's on host CPUs, as the CLI says.
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
