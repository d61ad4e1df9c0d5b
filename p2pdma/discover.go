package p2pdma

import (
	"fmt"
	"strings"

	"github.com/pkg/errors"

	"github.com/bpfblk/bpfblk/nvme"
)

// ErrNoCMB means a controller has no controller memory buffer, or one that
// cannot hold data.
var ErrNoCMB = errors.New("p2pdma: no controller memory buffer for data")

// CMBLOC bits beyond BIR and OFST (NVMe 1.4, 3.1.12), and CMBSTS.
const (
	cmblocCDPMLS  = 1 << 5 // CMB data pointer mixed locations support
	cmblocCDPCILS = 1 << 6 // CMB data pointer and command independent locations support
	cmbstsCBAI    = 1 << 0 // CMBSTS: controller base address invalid
)

// CMB is what a controller's registers say about its controller memory
// buffer (CAP.CMBS, CMBLOC, CMBSZ, CMBMSC).
type CMB struct {
	// BIR is the BAR that holds the CMB (CMBLOC.BIR).
	BIR int
	// Offset is the CMB's offset in the BAR (CMBLOC.OFST in SZU units).
	Offset uint64
	// Size is the CMB's size in bytes (CMBSZ.SZ in SZU units).
	Size uint64
	// Unit is the size unit CMBSZ.SZU decodes to (4 KiB .. 64 GiB).
	Unit uint64
	// SQ, CQ, Lists, ReadData and WriteData are CMBSZ.SQS, CQS, LISTS, RDS
	// and WDS: what the CMB may hold. Staged copies need ReadData (the owner
	// reads into it) or WriteData (the owner writes from it).
	SQ, CQ, Lists, ReadData, WriteData bool
	// MixedData (CMBLOC.CDPMLS) says one command's data may lie partly in
	// the CMB and partly in host memory; IndependentData (CDPCILS) that data
	// in the CMB may be used by commands whose queues and PRP lists are in
	// host memory, which is how the stack uses it.
	MixedData, IndependentData bool
	// Modern is set for an NVMe 1.4+ CMB (CAP.CMBS): CMBLOC and CMBSZ read 0
	// until CMBMSC.CRE is set, and the host places the CMB at a bus address
	// of its choice with CMBMSC.CBA and CMSE.
	Modern bool
	// Enabled reports CMBMSC.CMSE (controller memory space enabled) and
	// BusAddr the controller base address CMBMSC.CBA at discovery.
	Enabled bool
	BusAddr uint64
	// Loc and SZ are the raw CMBLOC and CMBSZ values.
	Loc, SZ uint32
}

// String describes the CMB in one line.
func (c CMB) String() string {
	var f []string
	for _, x := range []struct {
		on   bool
		name string
	}{{c.SQ, "SQS"}, {c.CQ, "CQS"}, {c.Lists, "LISTS"}, {c.ReadData, "RDS"}, {c.WriteData, "WDS"}} {
		if x.on {
			f = append(f, x.name)
		}
	}
	return fmt.Sprintf("%d MiB in BAR%d at %#x [%s]", c.Size>>20, c.BIR, c.Offset, strings.Join(f, " "))
}

// DecodeCMB decodes CMBLOC and CMBSZ with nvme.DecodeCMB, adding the
// capability bits p2pdma cares about. A size of zero is ErrNoCMB; a
// reserved size unit or a BAR that cannot hold a CMB is an error naming the
// register value.
func DecodeCMB(loc, sz uint32) (CMB, error) {
	i, ok, err := nvme.DecodeCMB(loc, sz)
	if err != nil {
		return CMB{}, err
	}
	if !ok {
		return CMB{}, ErrNoCMB
	}
	return CMB{
		BIR: i.BIR, Unit: i.Unit, Loc: loc, SZ: sz, Offset: i.Offset, Size: i.Size,
		SQ:       sz&nvme.CMBSZSQS != 0,
		CQ:       sz&nvme.CMBSZCQS != 0,
		Lists:    sz&nvme.CMBSZLISTS != 0,
		ReadData: sz&nvme.CMBSZRDS != 0, WriteData: sz&nvme.CMBSZWDS != 0,
		MixedData:       loc&cmblocCDPMLS != 0,
		IndependentData: loc&cmblocCDPCILS != 0,
	}, nil
}

// Discover reads a controller's CMB registers through its transport: for an
// NVMe 1.4+ controller (CAP.CMBS) it first sets CMBMSC.CRE, without which
// CMBLOC and CMBSZ read 0, keeping CBA and CMSE as they are. It maps and
// enables nothing; Open does. A controller without a CMB is ErrNoCMB.
func Discover(t nvme.Transport) (CMB, error) {
	capReg := nvme.CAP(t.Read64(nvme.RegCAP))
	if capReg == ^nvme.CAP(0) {
		return CMB{}, errors.Errorf("p2pdma: %s is unreachable (CAP reads all ones)", t.Name())
	}
	modern := capReg.CMBS()
	msc := t.Read64(nvme.RegCMBMSC)
	if modern && msc&nvme.CMBMSCCRE == 0 {
		msc |= nvme.CMBMSCCRE
		t.Write64(nvme.RegCMBMSC, msc)
	}
	loc, sz := t.Read32(nvme.RegCMBLOC), t.Read32(nvme.RegCMBSZ)
	if sz == ^uint32(0) {
		return CMB{}, errors.Errorf("p2pdma: %s is unreachable (CMBSZ reads all ones)", t.Name())
	}
	c, err := DecodeCMB(loc, sz)
	if errors.Is(err, ErrNoCMB) {
		if modern {
			return CMB{}, kindf(ErrNoCMB, "%s: CAP.CMBS is set but CMBSZ reads 0 after CMBMSC.CRE", t.Name())
		}
		return CMB{}, kindf(ErrNoCMB, "%s has no controller memory buffer", t.Name())
	}
	if err != nil {
		return CMB{}, errors.Wrap(err, t.Name())
	}
	c.Modern = modern
	if modern {
		c.Enabled = msc&nvme.CMBMSCCMSE != 0
		c.BusAddr = msc &^ 0xfff
	}
	return c, nil
}
