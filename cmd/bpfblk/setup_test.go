package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/bpfblk/bpfblk/nvme/pci"
	"github.com/bpfblk/bpfblk/nvme/pci/pcitest"
)

// fakeSetup points the setup command at a fake system with two NUMA nodes,
// a free NVMe controller, one whose namespace is mounted and one already
// bound to vfio-pci.
func fakeSetup(t *testing.T) (*pcitest.Fake, []pci.Addr, *[]string) {
	f := pcitest.New(t)
	free := f.AddFunction("0000:01:00.0", 0x144d, 0xa808, pci.ClassNVMe, "nvme", 12, 0)
	f.AddNamespace(free, 0, 1, 1)
	used := f.AddFunction("0000:02:00.0", 0x8086, 0x0a54, pci.ClassNVMe, "nvme", 13, 1)
	disk := f.AddNamespace(used, 1, 1, 2)
	f.Mount(disk+"p2", "/")
	taken := f.AddFunction("0000:03:00.0", 0x1b36, 0x0010, pci.ClassNVMe, "vfio-pci", 14, 1)
	f.AddFunction("0000:00:1f.0", 0x8086, 0x7a04, 0x060100, "", 15, 0)
	f.HugePages(2048, 0, 0, 1)
	f.HugePages(1048576, 0, 0, 1)
	old := setupHost
	setupHost = func(string) *pci.Host { return f.Host() }
	var loaded []string
	oldLoad := loadModule
	loadModule = func(name string) error { loaded = append(loaded, name); return nil }
	t.Cleanup(func() { setupHost, loadModule = old, oldLoad })
	return f, []pci.Addr{free, used, taken}, &loaded
}

func runCmd(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestSetupStatus(t *testing.T) {
	fakeSetup(t)
	code, out, errs := runCmd("setup", "status")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{
		"VFIO: ready (4 IOMMU groups, vfio-pci loaded)",
		"pci:0000:01:00.0  144d:a808      0     nvme      12           nvme0n1        -",
		"pci:0000:02:00.0  8086:0a54      1     nvme      13           nvme1n1        nvme1n1p2 is mounted on /",
		"pci:0000:03:00.0  1b36:0010      1     vfio-pci  14           -              -",
		"2048 kB     all   0      0     0 MiB",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "0000:00:1f.0") {
		t.Errorf("status lists a non-NVMe function:\n%s", out)
	}
}

func TestSetupConfig(t *testing.T) {
	f, a, loaded := fakeSetup(t)
	code, out, errs := runCmd("setup", "--hugemem", "64M")
	if code != exitOK {
		t.Fatalf("exit %d: %s\n%s", code, errs, out)
	}
	for _, want := range []string{
		"hugepages: 32 x 2048 kB (64 MiB), 32 free (node 0: 16, node 1: 16)",
		"0000:01:00.0 (144d:a808): nvme -> vfio-pci (IOMMU group 12)",
		"0000:02:00.0 (8086:0a54): in use (nvme1n1p2 is mounted on /); left with nvme",
		"0000:03:00.0 (1b36:0010): already bound to vfio-pci",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if f.Driver(a[0]) != "vfio-pci" || f.Driver(a[1]) != "nvme" || f.Driver(a[2]) != "vfio-pci" {
		t.Fatalf("drivers after setup: %s %s %s", f.Driver(a[0]), f.Driver(a[1]), f.Driver(a[2]))
	}
	if len(*loaded) != 0 {
		t.Fatalf("loaded modules on a fake root: %v", *loaded)
	}

	// Asking for the mounted device by name is a failure.
	code, out, _ = runCmd("setup", "config", "--dev", "pci:0000:02:00.0", "--hugepages", "4", "--node", "1")
	if code != exitFail || !strings.Contains(out, "in use") || f.Driver(a[1]) != "nvme" {
		t.Fatalf("exit %d, driver %s: %s", code, f.Driver(a[1]), out)
	}
	code, _, errs = runCmd("setup", "--dev", "pci:0000:09:00.0")
	if code != exitFail || !strings.Contains(errs, "no PCI function 0000:09:00.0") {
		t.Fatalf("missing device: exit %d: %s", code, errs)
	}

	// reset hands both vfio-pci functions back to nvme.
	code, out, errs = runCmd("setup", "reset")
	if code != exitOK {
		t.Fatalf("reset: exit %d: %s", code, errs)
	}
	if !strings.Contains(out, "0000:01:00.0 (144d:a808): vfio-pci -> nvme") || !strings.Contains(out, "0000:03:00.0 (1b36:0010): vfio-pci -> nvme") ||
		!strings.Contains(out, "0000:02:00.0 (8086:0a54): already with nvme") {
		t.Fatalf("reset output:\n%s", out)
	}
	for _, x := range a {
		if f.Driver(x) != "nvme" {
			t.Fatalf("%s bound to %q after reset", x, f.Driver(x))
		}
	}
}

func TestSetupDryRun(t *testing.T) {
	f, a, _ := fakeSetup(t)
	code, out, errs := runCmd("setup", "--dry-run", "--hugepages", "10", "--hugepage-size", "1G")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if len(f.Writes) != 0 || f.Driver(a[0]) != "nvme" {
		t.Fatalf("dry run changed the system: %v", f.Writes)
	}
	for _, want := range []string{`would write "5" to ` + f.Root + "/sys/devices/system/node/node0/hugepages/hugepages-1048576kB/nr_hugepages",
		`would write "vfio-pci" to ` + f.Root + "/sys/bus/pci/devices/0000:01:00.0/driver_override",
		"0000:01:00.0 (144d:a808): nvme would go from vfio-pci"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run output lacks %q:\n%s", want, out)
		}
	}
}

func TestSetupWithoutIOMMU(t *testing.T) {
	f, a, loaded := fakeSetup(t)
	f.NoIOMMU()
	code, out, errs := runCmd("setup", "--hugemem", "4M")
	if code != exitFail || !strings.Contains(errs, "VFIO cannot be used on this machine: no IOMMU") {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !strings.Contains(out, "hugepages: 2 x 2048 kB") || f.Driver(a[0]) != "nvme" || len(*loaded) != 0 {
		t.Fatalf("out %q driver %s loaded %v", out, f.Driver(a[0]), *loaded)
	}
	_, out, _ = runCmd("setup", "status")
	if !strings.Contains(out, "VFIO: unavailable: no IOMMU") {
		t.Fatalf("status:\n%s", out)
	}
}

func TestSetupNoDevices(t *testing.T) {
	f := pcitest.New(t)
	f.HugePages(2048, 0)
	f.AddFunction("0000:00:1f.0", 0x8086, 0x7a04, 0x060100, "", 3, -1)
	old := setupHost
	setupHost = func(string) *pci.Host { return f.Host() }
	defer func() { setupHost = old }()
	code, out, _ := runCmd("setup", "--hugepages", "2")
	if code != exitOK || !strings.Contains(out, "no NVMe functions found") || !strings.Contains(out, "hugepages: 2 x 2048 kB (4 MiB)") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if _, out, _ := runCmd("setup", "status"); !strings.Contains(out, "no NVMe functions (PCI class 0x010802)") {
		t.Fatalf("status:\n%s", out)
	}
}

func TestSetupUsage(t *testing.T) {
	fakeSetup(t)
	for _, args := range [][]string{
		{"setup", "bind"},
		{"setup", "status", "extra"},
		{"setup", "--dev", "mock"},
		{"setup", "--dev", "pci:0000:01:00"},
		{"setup", "--hugemem", "lots"},
		{"setup", "--hugemem", "-1G"},
		{"setup", "--hugepage-size", "4M"},
		{"setup", "--hugepages", "-3"},
		{"setup", "--node", "-2"},
		{"setup", "--bogus"},
	} {
		code, out, errs := runCmd(args...)
		checkUsageError(t, "setup", args, code, out, errs)
	}
}

func TestParseMemSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "2G": 2 << 30, "512M": 512 << 20, "1024": 1 << 30, "4GiB": 4 << 30, "64k": 64 << 10, "1T": 1 << 40} {
		if got, err := parseMemSize(in); err != nil || got != want {
			t.Errorf("parseMemSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "G", "1.5G", "-1", "99999999999T"} {
		if _, err := parseMemSize(in); err == nil {
			t.Errorf("parseMemSize(%q) accepted", in)
		}
	}
}

func FuzzParseMemSize(f *testing.F) {
	for _, s := range []string{"2G", "512M", "1024", "0", "4GiB", "1.5G", "-1", "99999999999T", "k"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseMemSize(s)
		if err == nil && n < 0 {
			t.Fatalf("parseMemSize(%q) = %d", s, n)
		}
	})
}
