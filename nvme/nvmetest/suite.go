// Package nvmetest holds the NVMe driver test suite. It is written once and runs
// against any transport: the emulated controllers of nvme/mock in CI and QEMU's
// NVMe controllers through nvme/vfio.
package nvmetest

import (
	"testing"

	"github.com/bpfblk/bpfblk/nvme"
)

// RunDriverSuite runs the driver suite as subtests of t. open is called once per
// subtest and must return fresh controllers (at least one, each with at least one
// NVM namespace); the suite initialises them with nvme.NewController and closes
// them (which closes the transports) when the subtest ends. The suite assumes
// nothing beyond the NVMe specification: any LBA size, MDTS, with or without
// Copy, Write Zeroes, Dataset Management or a CMB.
func RunDriverSuite(t *testing.T, open func(t *testing.T) []nvme.Transport) {
	t.Helper()
	runSuite(t, open)
}
