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
	RunDriverSuiteWith(t, open, SuiteConfig{})
}

// SuiteConfig tunes RunDriverSuiteWith. The zero value is the default suite.
type SuiteConfig struct {
	// IntegrityOps is the number of random reads and writes of the Integrity
	// test (0 means IntegrityOps, or 20,000 under -short).
	IntegrityOps int
	// NoLBARangeCheck, when not empty, says why the controller is known not
	// to answer a transfer past the end of a namespace with LBA Out of
	// Range (the Linux 6.1 nvmet block device backend answers Internal
	// Error): the Errors test then only requires that such a transfer fails,
	// and logs the reason.
	NoLBARangeCheck string
}

// RunDriverSuiteWith is RunDriverSuite with a configuration, for transports
// that are slow (an emulated device on its own reactor under -race, QEMU
// under TCG).
func RunDriverSuiteWith(t *testing.T, open func(t *testing.T) []nvme.Transport, cfg SuiteConfig) {
	t.Helper()
	runSuite(t, open, cfg)
}
