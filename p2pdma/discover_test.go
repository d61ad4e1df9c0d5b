package p2pdma

import (
	"strings"
	"testing"

	"github.com/pkg/errors"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
)

func TestDecodeCMB(t *testing.T) {
	// QEMU 7.2 with cmb_size_mb=64 (CMBLOC 0x62: BIR 2, CDPMLS, CDPCILS).
	c, err := DecodeCMB(0x00000062, 0x0004021d)
	if err != nil {
		t.Fatal(err)
	}
	if c.BIR != 2 || c.Offset != 0 || c.Size != 64<<20 || c.Unit != 1<<20 || !c.SQ || c.CQ || !c.Lists || !c.ReadData || !c.WriteData || !c.MixedData || !c.IndependentData {
		t.Fatalf("QEMU CMB decoded as %+v", c)
	}
	if s := c.String(); s != "64 MiB in BAR2 at 0x0 [SQS LISTS RDS WDS]" {
		t.Fatalf("String %q", s)
	}
	// 4 KiB units, offset 16 units into BAR4, read data only.
	c, err = DecodeCMB(0x10<<12|4, 0x100<<12|0<<8|nvme.CMBSZRDS)
	if err != nil || c.BIR != 4 || c.Offset != 0x10000 || c.Size != 0x100000 || !c.ReadData || c.WriteData {
		t.Fatalf("%+v %v", c, err)
	}
	for _, bad := range []struct {
		loc, sz uint32
		want    string
	}{
		{2, 7<<8 | 1<<12, "size unit 7 is reserved"},
		{1, 2<<8 | 1<<12, "BAR1"},
		{6, 2<<8 | 1<<12, "BAR6"},
	} {
		if _, err := DecodeCMB(bad.loc, bad.sz); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("DecodeCMB(%#x, %#x) = %v, want %q", bad.loc, bad.sz, err, bad.want)
		}
	}
	if _, err := DecodeCMB(2, 0); !errors.Is(err, ErrNoCMB) {
		t.Fatal(err)
	}
}

// regs is a transport with nothing but registers, for discovery edge cases.
type regs struct {
	nvme.Transport
	r map[uint32]uint64
}

func (f *regs) Name() string                 { return "fake0" }
func (f *regs) Read32(off uint32) uint32     { return uint32(f.r[off]) }
func (f *regs) Read64(off uint32) uint64     { return f.r[off] }
func (f *regs) Write64(off uint32, v uint64) { f.r[off] = v }

func TestDiscover(t *testing.T) {
	// The mock: NVMe 1.4 behaviour, nothing readable until CRE.
	bus := mock.NewBus()
	d, err := mock.NewController(bus, mock.Config{CMBSize: 3 << 20, Namespaces: []mock.NamespaceConfig{{Size: 1 << 20}}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Read32(nvme.RegCMBSZ) != 0 {
		t.Fatal("CMBSZ readable before CMBMSC.CRE")
	}
	c, err := Discover(d)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Modern || c.Size != 3<<20 || c.BIR != 2 || !c.ReadData || !c.WriteData || c.Enabled {
		t.Fatalf("mock CMB %+v", c)
	}
	if d.Read64(nvme.RegCMBMSC)&nvme.CMBMSCCRE == 0 {
		t.Fatal("Discover did not set CMBMSC.CRE")
	}
	// No CMB at all.
	plain, _ := mock.NewController(bus, mock.Config{Name: "plain0", Namespaces: []mock.NamespaceConfig{{Size: 1 << 20}}})
	defer plain.Close()
	if _, err := Discover(plain); !errors.Is(err, ErrNoCMB) || !strings.Contains(err.Error(), "plain0 has no controller memory buffer") {
		t.Fatalf("no CMB: %v", err)
	}
	// A pre-1.4 CMB: readable at once, placed by its BAR.
	f := &regs{r: map[uint32]uint64{nvme.RegCMBLOC: 2, nvme.RegCMBSZ: 1<<12 | 2<<8 | nvme.CMBSZWDS}}
	if c, err := Discover(f); err != nil || c.Modern || c.Size != 1<<20 || c.ReadData || !c.WriteData {
		t.Fatalf("legacy CMB %+v %v", c, err)
	}
	if _, ok := f.r[nvme.RegCMBMSC]; ok {
		t.Fatal("Discover wrote CMBMSC on a controller without CAP.CMBS")
	}
	// CAP.CMBS but CMBSZ stays 0, and a removed device.
	f = &regs{r: map[uint32]uint64{nvme.RegCAP: 1 << 57}}
	if _, err := Discover(f); !errors.Is(err, ErrNoCMB) || !strings.Contains(err.Error(), "CAP.CMBS is set") {
		t.Fatalf("CMBS without size: %v", err)
	}
	f = &regs{r: map[uint32]uint64{nvme.RegCAP: ^uint64(0), nvme.RegCMBSZ: 0xffffffff}}
	if _, err := Discover(f); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("removed device: %v", err)
	}
}

// TestRegion: one Region per controller, registration of peers on the same
// bus only, and Open's errors for controllers without a usable CMB.
func TestRegion(t *testing.T) {
	r := standardRig(t, mock.Inline)
	a := mustOpen(t, r, "mockB")
	b := mustOpen(t, r, "mockB")
	if a != b {
		t.Fatal("two Regions for one CMB")
	}
	if a.Size() != 4<<20 || a.Owner() != r.ctrls["mockB"] || a.BusAddr()%4096 != 0 || len(a.Mem()) != 4<<20 || !a.CMB().Enabled {
		t.Fatalf("region %s: %d bytes at %#x, %+v", a.Name(), a.Size(), a.BusAddr(), a.CMB())
	}
	msc := r.devs["mockB"].Read64(nvme.RegCMBMSC)
	if msc != a.BusAddr()|nvme.CMBMSCCMSE|nvme.CMBMSCCRE {
		t.Fatalf("CMBMSC %#x, bus address %#x", msc, a.BusAddr())
	}
	v, err := a.Peer(r.ctrls["mockA"])
	if err != nil || v.IOVA != a.BusAddr() {
		t.Fatalf("peer view %+v %v", v, err)
	}
	if got, kind, ok := r.bus.Translate(v.IOVA+4096, 512); !ok || kind != mock.PeerMemory || &got[0] != &a.Mem()[4096] {
		t.Fatal("the peer address does not reach the CMB on the bus")
	}
	other := newRig(t, nsOnly("mockZ"))
	if _, err := a.Peer(other.ctrls["mockZ"]); !errors.Is(err, ErrNoPeerPath) {
		t.Fatalf("controller on another bus: %v", err)
	}
	if _, err := Open(r.ctrls["mockA"]); !errors.Is(err, ErrNoCMB) || !strings.Contains(err.Error(), "mockA has no controller memory buffer") {
		t.Fatalf("Open without a CMB: %v", err)
	}
	if _, err := OpenAny([]*nvme.Controller{r.ctrls["mockA"], r.ctrls["mockC"]}); !errors.Is(err, ErrNoCMB) ||
		!strings.Contains(err.Error(), "mockA") || !strings.Contains(err.Error(), "mockC") {
		t.Fatalf("OpenAny without CMBs: %v", err)
	}
	blk, _ := a.Alloc(8192)
	b.Close()
	if err := a.Close(); err == nil || !strings.Contains(err.Error(), "1 blocks allocated") {
		t.Fatalf("last Close with a block allocated: %v", err)
	}
	_ = blk
	if err := a.Close(); err == nil {
		t.Fatal("Close after the last Close accepted")
	}
}

// FuzzDecodeCMB: any register pair decodes or fails cleanly; what decodes
// is consistent with the raw fields.
func FuzzDecodeCMB(f *testing.F) {
	f.Add(uint32(0x62), uint32(0x0004021d))
	f.Add(uint32(2), uint32(7<<8|1<<12))
	f.Add(uint32(0xffffffff), uint32(0xffffffff))
	f.Fuzz(func(t *testing.T, loc, sz uint32) {
		c, err := DecodeCMB(loc, sz)
		if err != nil {
			return
		}
		if c.Size == 0 || c.Size%4096 != 0 || c.Offset%c.Unit != 0 || c.BIR == 1 || c.BIR > 5 || c.Size != uint64(sz>>12)*c.Unit {
			t.Fatalf("DecodeCMB(%#x, %#x) = %+v", loc, sz, c)
		}
	})
}
