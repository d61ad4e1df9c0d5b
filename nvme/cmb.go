package nvme

import "github.com/pkg/errors"

// BARMapper is an optional interface of a Transport that can expose a PCI BAR
// (where a Controller Memory Buffer lives) to the host CPU and to peers.
// MapBAR returns the CPU view of BAR bir and the bus address (IOVA) at which
// the controller itself and its peers reach it. The memory is released by
// Close; it must not be passed to FreeDMA.
type BARMapper interface {
	MapBAR(bir int) (*DMA, error)
}

// CMBInfo describes a Controller Memory Buffer as CMBLOC/CMBSZ report it.
type CMBInfo struct {
	BIR    int    // BAR indicator
	Offset uint64 // offset of the CMB in the BAR
	Size   uint64 // bytes
	Unit   uint64 // the size unit CMBSZ.SZU decodes to (4 KiB .. 64 GiB)
	Loc    uint32 // raw CMBLOC (BIR, CDPMLS, CDPCILS, OFST)
	SZ     uint32 // raw CMBSZ (SQS, CQS, LISTS, RDS, WDS bits)
}

// DecodeCMB decodes CMBLOC and CMBSZ (NVMe 1.4, 3.1.12 and 3.1.13): the one
// decoder of those registers. ok is false when they report no CMB (a size
// of zero); a reserved size unit or a BAR that cannot hold a CMB is an
// error naming the register value.
func DecodeCMB(loc, sz uint32) (info CMBInfo, ok bool, err error) {
	if sz == 0 {
		return CMBInfo{}, false, nil
	}
	szu := sz >> 8 & 0xf
	if szu > 6 {
		return CMBInfo{}, false, errors.Errorf("nvme: CMBSZ %#08x: size unit %d is reserved", sz, szu)
	}
	unit := uint64(4096) << (4 * szu)
	info = CMBInfo{BIR: int(loc & 7), Offset: uint64(loc>>12) * unit, Size: uint64(sz>>12) * unit, Unit: unit, Loc: loc, SZ: sz}
	// BAR1 is the upper half of the 64-bit BAR0 and 6/7 are reserved.
	if info.BIR == 1 || info.BIR > 5 {
		return CMBInfo{}, false, errors.Errorf("nvme: CMBLOC %#08x names BAR%d, which cannot hold a CMB", loc, info.BIR)
	}
	return info, info.Size != 0, nil
}

// ReadData reports whether read data may be placed in the CMB (RDS).
func (i CMBInfo) ReadData() bool { return i.SZ&CMBSZRDS != 0 }

// WriteData reports whether write data may come from the CMB (WDS).
func (i CMBInfo) WriteData() bool { return i.SZ&CMBSZWDS != 0 }

// CMBInfo returns the controller's CMB description, enabling the CMB
// capability registers first (CMBMSC.CRE, NVMe 1.4+). ok is false when the
// controller has no CMB.
func (c *Controller) CMBInfo() (info CMBInfo, ok bool) {
	c.adminMu.Lock()
	defer c.adminMu.Unlock()
	return c.cmbInfoLocked()
}

func (c *Controller) cmbInfoLocked() (CMBInfo, bool) {
	if c.cap.CMBS() && c.t.Read64(RegCMBMSC)&CMBMSCCRE == 0 {
		c.t.Write64(RegCMBMSC, CMBMSCCRE)
	}
	loc, sz := c.t.Read32(RegCMBLOC), c.t.Read32(RegCMBSZ)
	if sz == 0xffffffff {
		return CMBInfo{}, false
	}
	info, ok, err := DecodeCMB(loc, sz)
	return info, ok && err == nil
}

// MapCMB maps the controller's CMB through the transport (which must
// implement BARMapper) and enables its memory space at the bus address the
// transport reports (CMBMSC = CBA | CMSE | CRE). The returned DMA region is
// usable as a data buffer for this controller and, with peer-to-peer DMA, for
// others. It stays valid until Close and is re-enabled after resets.
func (c *Controller) MapCMB() (*DMA, CMBInfo, error) {
	c.adminMu.Lock()
	defer c.adminMu.Unlock()
	if c.cmb != nil {
		info, _ := c.cmbInfoLocked()
		return c.cmb, info, nil
	}
	info, ok := c.cmbInfoLocked()
	if !ok {
		return nil, info, errors.Wrapf(ErrNotSupported, "%s: no controller memory buffer", c.t.Name())
	}
	bm, ok := c.t.(BARMapper)
	if !ok {
		return nil, info, errors.Wrapf(ErrNotSupported, "%s: transport cannot map BARs", c.t.Name())
	}
	bar, err := bm.MapBAR(info.BIR)
	if err != nil {
		return nil, info, errors.Wrapf(err, "%s: map BAR %d", c.t.Name(), info.BIR)
	}
	if info.Offset+info.Size > uint64(len(bar.Buf)) {
		return nil, info, errors.Errorf("%s: CMB [%#x, +%#x) exceeds BAR %d of %#x bytes", c.t.Name(), info.Offset, info.Size, info.BIR, len(bar.Buf))
	}
	d := &DMA{Buf: bar.Buf[info.Offset : info.Offset+info.Size], IOVA: bar.IOVA + info.Offset}
	if d.IOVA&0xfff != 0 {
		return nil, info, errors.Errorf("%s: CMB bus address %#x is not 4 KiB aligned", c.t.Name(), d.IOVA)
	}
	// CMBMSC exists from NVMe 1.4 on (CAP.CMBS); an older controller decodes
	// its CMB at the BAR address without being told, and the register is
	// reserved there.
	if c.cap.CMBS() {
		c.t.Write64(RegCMBMSC, d.IOVA|CMBMSCCMSE|CMBMSCCRE)
	}
	c.cmb = d
	return d, info, nil
}
