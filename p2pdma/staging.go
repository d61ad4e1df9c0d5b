package p2pdma

import (
	"context"
	"fmt"
	"time"

	"github.com/pkg/errors"

	"github.com/bpfblk/bpfblk/bdev"
)

// CMBStaging stages the chunks of host-engine scans in a CMB: it implements
// compute.Staging, so the base namespaces' Reads land in the region (peer to
// peer when the region belongs to another controller) and the program reads
// them there; no payload byte crosses host DRAM.
type CMBStaging struct {
	r *Region
	// Wait bounds how long Alloc waits for space in a full region before it
	// fails (back-pressure against concurrent copies and scans); 0 means 5 s.
	Wait time.Duration
}

// NewCMBStaging returns a staging over r. The caller keeps r open for as
// long as the staging is used.
func NewCMBStaging(r *Region) *CMBStaging { return &CMBStaging{r: r} }

// Alloc returns size bytes of the region as base's controller reaches them.
// base must be an NVMe namespace whose controller has a path to the region.
func (s *CMBStaging) Alloc(base *bdev.Bdev, size int) (bdev.Buffer, error) {
	c, _ := bdev.NVMeNamespace(base)
	if c == nil {
		return bdev.Buffer{}, kindf(ErrNoPeerPath, "%s is not an NVMe namespace and cannot read into %s", base.Name(), s.r.Name())
	}
	if !s.r.CanRead(c) {
		return bdev.Buffer{}, kindf(ErrPath, "%s may not hold read data for its owner %s (CMBSZ.RDS clear)", s.r.Name(), c.Name())
	}
	view, err := s.r.Peer(c)
	if err != nil {
		return bdev.Buffer{}, err
	}
	wait := s.Wait
	if wait <= 0 {
		wait = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	blk, err := s.r.AllocWait(ctx, size)
	if err != nil {
		return bdev.Buffer{}, kindf(ErrFull, "%s stayed full for %v (stage smaller chunks or fewer in flight): %v", s.r.Name(), wait, err)
	}
	return blk.Buffer(view), nil
}

// Free returns a buffer from Alloc.
func (s *CMBStaging) Free(base *bdev.Bdev, b bdev.Buffer) error {
	if b.DMA == nil || len(b.DMA.Buf) != len(s.r.Mem()) {
		return errors.Errorf("p2pdma: buffer of %d bytes is not from %s", len(b.Bytes), s.r.Name())
	}
	return s.r.alloc.Free(uint64(b.Off))
}

// ThroughHost reports false: staged bytes stay in the CMB.
func (s *CMBStaging) ThroughHost() bool { return false }

// Name describes the staging memory, e.g. "cmb of mock1", and says when
// the CMB is emulated and its CPU reads charged.
func (s *CMBStaging) Name() string {
	if d := s.r.EmulatedReadCost(); d > 0 {
		return fmt.Sprintf("%s (emulated: CPU reads charged %v per 64 B, as uncached BAR reads)", s.r.Name(), d)
	}
	return s.r.Name()
}

// ChargeCPURead implements compute.CPUReadCharger: a CPU read of n bytes
// of the region costs what its owner's transport says an uncached BAR read
// costs (an emulated CMB charges it; real memory costs it by itself).
func (s *CMBStaging) ChargeCPURead(n int) { s.r.ChargeCPURead(n) }

// Region returns the region the staging allocates from.
func (s *CMBStaging) Region() *Region { return s.r }
