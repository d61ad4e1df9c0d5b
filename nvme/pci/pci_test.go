package pci_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/bpfblk/bpfblk/nvme/pci"
	"github.com/bpfblk/bpfblk/nvme/pci/pcitest"
)

func TestParseAddr(t *testing.T) {
	good := map[string]pci.Addr{
		"pci:0000:01:00.0":  {Bus: 1},
		"0000:01:00.0":      {Bus: 1},
		"01:00.0":           {Bus: 1},
		"0001:ff:1f.7":      {Domain: 1, Bus: 0xff, Device: 0x1f, Function: 7},
		"pci:10000:E3:00.1": {Domain: 0x10000, Bus: 0xe3, Function: 1},
	}
	for in, want := range good {
		got, err := pci.ParseAddr(in)
		if err != nil || got != want {
			t.Errorf("ParseAddr(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	bad := []string{"", "pci:", "mock", "0000:01:00", "0000:01:20.0", "0000:01:00.8", "0000:1:00.0",
		"0000:01:0.0", "zz:00.0", "0000:01:00.00", "123456789:01:00.0", "0000:01:00.0 ", "a:b:c:d.0", "0000:0x:00.0"}
	for _, in := range bad {
		if a, err := pci.ParseAddr(in); err == nil {
			t.Errorf("ParseAddr(%q) = %v, want an error", in, a)
		} else if !strings.Contains(err.Error(), fmt.Sprintf("%q", in)) {
			t.Errorf("error %q does not name the input", err)
		}
	}
}

func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{"pci:0000:01:00.0", "01:00.0", "ffff:ff:1f.7", "x", "::.", "0:00:00.0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := pci.ParseAddr(s)
		if err != nil {
			return
		}
		// A parsed address round-trips through its canonical forms.
		for _, form := range []string{a.String(), a.DevString()} {
			b, err := pci.ParseAddr(form)
			if err != nil || b != a {
				t.Fatalf("%q -> %v -> %q -> %v, %v", s, a, form, b, err)
			}
		}
	})
}

func TestAddrStrings(t *testing.T) {
	a := pci.Addr{Domain: 0, Bus: 0x3a, Device: 0x1f, Function: 3}
	if a.String() != "0000:3a:1f.3" || a.DevString() != "pci:0000:3a:1f.3" {
		t.Fatalf("got %s %s", a, a.DevString())
	}
	if !pci.IsDevString("pci:0000:3a:1f.3") || pci.IsDevString("mock") || pci.IsDevString("file:x") {
		t.Fatal("IsDevString")
	}
}

func TestDiscovery(t *testing.T) {
	f := pcitest.New(t)
	a := f.AddFunction("0000:02:00.0", 0x144d, 0xa808, pci.ClassNVMe, "nvme", 7, 1)
	b := f.AddFunction("0000:01:00.0", 0x1b36, 0x0010, pci.ClassNVMe, "vfio-pci", 3, 0)
	f.AddFunction("0000:00:1f.0", 0x8086, 0x1234, 0x060100, "", 3, -1)
	h := f.Host()
	nv, err := h.NVMeFunctions()
	if err != nil {
		t.Fatal(err)
	}
	if len(nv) != 2 || nv[0].Addr != b || nv[1].Addr != a {
		t.Fatalf("NVMe functions %+v", nv)
	}
	if g := nv[1]; g.Vendor != 0x144d || g.Device != 0xa808 || g.Driver != "nvme" || g.IOMMUGroup != 7 || g.NUMANode != 1 || g.DriverOverride != "" {
		t.Fatalf("function %+v", g)
	}
	m, err := h.GroupMembers(3)
	if err != nil || len(m) != 2 || m[0].Addr.String() != "0000:00:1f.0" || m[0].NUMANode != -1 {
		t.Fatalf("group 3: %+v %v", m, err)
	}
	if _, err := h.Function(pci.Addr{Bus: 9}); err == nil || !strings.Contains(err.Error(), "0000:09:00.0") {
		t.Fatalf("missing function: %v", err)
	}
	if s := h.VFIO(); s.Problem() != "" || s.IOMMUGroups != 2 {
		t.Fatalf("VFIO status %+v: %s", s, s.Problem())
	}
	f.NoIOMMU()
	if p := h.VFIO().Problem(); !strings.Contains(p, "no IOMMU") {
		t.Fatalf("problem without IOMMU: %q", p)
	}
}

func TestBindRelease(t *testing.T) {
	f := pcitest.New(t)
	a := f.AddFunction("0000:02:00.0", 0x144d, 0xa808, pci.ClassNVMe, "nvme", 7, 0)
	f.AddNamespace(a, 0, 1, 2)
	h := f.Host()
	if err := h.Bind(a, pci.DriverVFIO); err != nil {
		t.Fatal(err)
	}
	if f.Driver(a) != "vfio-pci" {
		t.Fatalf("driver %q after Bind", f.Driver(a))
	}
	fn, _ := h.Function(a)
	if fn.DriverOverride != "vfio-pci" {
		t.Fatalf("override %q", fn.DriverOverride)
	}
	// Binding again changes nothing.
	n := len(f.Writes)
	if err := h.Bind(a, pci.DriverVFIO); err != nil || len(f.Writes) != n {
		t.Fatalf("rebind: %v, writes %v", err, f.Writes[n:])
	}
	drv, err := h.Release(a)
	if err != nil || drv != "nvme" || f.Driver(a) != "nvme" {
		t.Fatalf("Release: %q %v (fake driver %q)", drv, err, f.Driver(a))
	}
	if fn, _ := h.Function(a); fn.DriverOverride != "" {
		t.Fatalf("override left: %q", fn.DriverOverride)
	}
}

func TestBindRefusesInUse(t *testing.T) {
	cases := map[string]func(f *pcitest.Fake, disk string) string{
		"mounted":   func(f *pcitest.Fake, d string) string { f.Mount(d+"p2", "/data"); return d + "p2 is mounted on /data" },
		"holder":    func(f *pcitest.Fake, d string) string { f.Hold(d, "dm-0"); return d + " is held by dm-0" },
		"swap":      func(f *pcitest.Fake, d string) string { f.Swap(d + "p1"); return d + "p1 is an active swap area" },
		"wholedisk": func(f *pcitest.Fake, d string) string { f.Mount(d, "/"); return d + " is mounted on /" },
	}
	for name, use := range cases {
		t.Run(name, func(t *testing.T) {
			f := pcitest.New(t)
			a := f.AddFunction("0000:02:00.0", 0x144d, 0xa808, pci.ClassNVMe, "nvme", 7, 0)
			disk := f.AddNamespace(a, 0, 1, 2)
			want := use(f, disk)
			h := f.Host()
			err := h.Bind(a, pci.DriverVFIO)
			if !errors.Is(err, pci.ErrInUse) || !strings.Contains(err.Error(), want) {
				t.Fatalf("Bind of a used device: %v; want ErrInUse mentioning %q", err, want)
			}
			if f.Driver(a) != "nvme" || len(f.Writes) != 0 {
				t.Fatalf("device touched: driver %q, writes %v", f.Driver(a), f.Writes)
			}
		})
	}
}

func TestBindWithoutVFIODriver(t *testing.T) {
	f := pcitest.New(t)
	a := f.AddFunction("0000:02:00.0", 0x144d, 0xa808, pci.ClassNVMe, "", 7, 0)
	f.NoIOMMU()
	err := f.Host().Bind(a, pci.DriverVFIO)
	if err == nil || !strings.Contains(err.Error(), "modprobe vfio-pci") {
		t.Fatalf("got %v", err)
	}
}

func TestHugePages(t *testing.T) {
	f := pcitest.New(t)
	f.HugePages(2048, 0, 0, 1)
	f.HugePages(1048576, 0, 0, 1)
	h := f.Host()
	if err := h.ReserveHugePages(2048, 5, -1); err != nil {
		t.Fatal(err)
	}
	pools, err := h.HugePools()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, p := range pools {
		got[fmt.Sprintf("%d/%d", p.SizeKB, p.Node)] = p.Total
	}
	if got["2048/0"] != 3 || got["2048/1"] != 2 || got["1048576/1"] != 0 {
		t.Fatalf("pools after an even split of 5: %v", got)
	}
	if err := h.ReserveHugePages(2048, 4, 1); err != nil {
		t.Fatal(err)
	}
	if err := h.ReserveHugePages(2048, 4, 7); err == nil || !strings.Contains(err.Error(), "node 7") {
		t.Fatalf("unknown node: %v", err)
	}
	if err := h.ReserveHugePages(4096, 4, -1); err == nil {
		t.Fatal("unsupported page size accepted")
	}
	f.MaxHugePages = 1
	if err := h.ReserveHugePages(2048, 4, 0); err == nil || !strings.Contains(err.Error(), "only 1 of 4") {
		t.Fatalf("fragmented memory: %v", err)
	}
}

func TestHugePagesNoNUMA(t *testing.T) {
	f := pcitest.New(t)
	f.HugePages(2048, 0)
	h := f.Host()
	if err := h.ReserveHugePages(2048, 8, -1); err != nil {
		t.Fatal(err)
	}
	pools, err := h.HugePools()
	if err != nil || len(pools) != 1 || pools[0].Total != 8 || pools[0].Node != -1 || pools[0].Bytes() != 16<<20 {
		t.Fatalf("%+v %v", pools, err)
	}
}

func ExampleParseAddr() {
	a, err := pci.ParseAddr("pci:0000:01:00.0")
	if err != nil {
		panic(err)
	}
	fmt.Println(a, a.Bus, a.DevString())
	// Output: 0000:01:00.0 1 pci:0000:01:00.0
}
