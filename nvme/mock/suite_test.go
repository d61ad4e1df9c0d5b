package mock_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
	"github.com/bpfblk/bpfblk/nvme/nvmetest"
)

// subsystem builds two controllers on one bus, shaped like the QEMU setup
// the suite also runs on: A with two 512 B namespaces (one file-backed) and
// Copy, B with a 4 KiB namespace, a 1 TiB sparse namespace, a CMB and no
// Copy.
func subsystem(t *testing.T, mode mock.Mode) []nvme.Transport {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nsA2.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 32<<20); err != nil {
		t.Fatal(err)
	}
	bus := mock.NewBus()
	a, err := mock.NewController(bus, mock.Config{
		Serial: "MOCKTESTA", Mode: mode,
		Namespaces: []mock.NamespaceConfig{
			{Kind: mock.Memory, Size: 64 << 20},
			{Kind: mock.File, Path: path},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := mock.NewController(bus, mock.Config{
		Serial: "MOCKTESTB", Mode: mode, NoCopy: true, CMBSize: 64 << 20, MDTS: 5,
		Namespaces: []mock.NamespaceConfig{
			{Kind: mock.Memory, Size: 64 << 20, LBASize: 4096},
			{Kind: mock.Memory, Size: 1 << 40},
		},
	})
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	return []nvme.Transport{a, b}
}

func TestDriverSuiteInline(t *testing.T) {
	nvmetest.RunDriverSuite(t, func(t *testing.T) []nvme.Transport { return subsystem(t, mock.Inline) })
}

func TestDriverSuiteDeviceCore(t *testing.T) {
	// The device runs on its own reactor, in parallel with the driver.
	nvmetest.RunDriverSuite(t, func(t *testing.T) []nvme.Transport { return subsystem(t, mock.DeviceCore) })
}
