package vfio_test

import (
	"testing"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/nvmetest"
)

// TestDriverSuiteOverVFIO runs the driver suite that also runs against the
// emulated controllers of nvme/mock, here against real VFIO devices (QEMU's
// NVMe controllers in test/qemu). Every subtest gets freshly opened
// controllers in one shared container, so peers reach each other's CMB.
func TestDriverSuiteOverVFIO(t *testing.T) {
	testDevices(t)
	nvmetest.RunDriverSuite(t, func(t *testing.T) []nvme.Transport {
		var ts []nvme.Transport
		for _, d := range openAll(t, true) {
			ts = append(ts, d)
		}
		return ts
	})
}
