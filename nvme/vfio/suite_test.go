package vfio_test

import (
	"testing"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/nvmetest"
)

// suiteIntegrityOps sizes the suite's random I/O for QEMU under TCG, where
// a command costs 100-300 µs and CI machines are busy.
const suiteIntegrityOps = 25_000

// TestDriverSuiteOverVFIO runs the driver suite that also runs against the
// emulated controllers of nvme/mock, here against real VFIO devices (QEMU's
// NVMe controllers in test/qemu). Every subtest gets freshly opened
// controllers in one shared container, so peers reach each other's CMB.
func TestDriverSuiteOverVFIO(t *testing.T) {
	testDevices(t)
	nvmetest.RunDriverSuiteWith(t, func(t *testing.T) []nvme.Transport {
		var ts []nvme.Transport
		for _, d := range openAll(t, true) {
			ts = append(ts, d)
		}
		return ts
	}, nvmetest.SuiteConfig{IntegrityOps: suiteIntegrityOps})
}
