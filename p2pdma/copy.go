package p2pdma

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"time"

	"github.com/pkg/errors"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/nvme"
)

// Via selects how Copy moves data.
type Via int

// Copy paths.
const (
	// ViaAuto uses NVM Copy when it can, else a CMB, else (announced through
	// CopyOptions.Logf) host memory.
	ViaAuto Via = iota
	// ViaCMB stages chunks in a controller memory buffer: the source's Reads
	// land there and the destination's Writes take the data from there.
	ViaCMB
	// ViaCopy uses the NVM Copy command: source and destination must be one
	// namespace of a controller that supports Copy.
	ViaCopy
	// ViaHost bounces chunks through host DMA memory.
	ViaHost
)

var viaNames = [...]string{"auto", "cmb", "copy", "host"}

func (v Via) String() string {
	if v < 0 || int(v) >= len(viaNames) {
		return fmt.Sprintf("via(%d)", int(v))
	}
	return viaNames[v]
}

// ParseVia parses "auto", "cmb", "copy" or "host".
func ParseVia(s string) (Via, error) {
	for i, n := range viaNames {
		if s == n {
			return Via(i), nil
		}
	}
	return 0, kindf(ErrInvalid, "unknown copy path %q (want auto, cmb, copy or host)", s)
}

// ErrInvalid marks a copy request that can never work: bad ranges,
// mismatched block sizes, overlapping source and destination.
var ErrInvalid = errors.New("p2pdma: invalid copy")

// ErrPath means the requested copy path is not available for these
// namespaces (no CMB, no peer path, no Copy support); the message says what
// is missing and which path would work.
var ErrPath = errors.New("p2pdma: copy path not available")

// CopyOptions tune Copy. The zero value is usable.
type CopyOptions struct {
	Via Via
	// ChunkBytes is the size of one Read/Write pair (rounded down to the
	// block size); 0 means 128 KiB.
	ChunkBytes int
	// InFlight is the number of chunks (or Copy commands) in flight; 0 means 8.
	InFlight int
	// Region is the CMB to stage ViaCMB copies in; nil means the
	// destination controller's CMB, else the source's, else that of the
	// first of Others that both reach.
	Region *Region
	// Others are further controllers (e.g. every controller of the fabric)
	// whose CMBs may stage the copy when neither end has a usable one.
	Others []*nvme.Controller
	// Wait bounds how long a copy waits for CMB space when the CMB is full;
	// 0 means 10 s.
	Wait time.Duration
	// Logf, when set, is told when ViaAuto falls back to a slower path.
	Logf func(format string, args ...any)
}

// CopyStats is what a copy did.
type CopyStats struct {
	Via  Via    // path taken
	Path string // e.g. "nvm copy on mock0", "cmb of mock1", "host memory"
	// Fallback says why ViaAuto did not take a faster path ("" if it did).
	Fallback string
	Bytes    uint64
	// BytesThroughHost counts payload bytes staged in host DRAM (each byte
	// once): Bytes for ViaHost, 0 for ViaCMB and ViaCopy.
	BytesThroughHost uint64
	Elapsed          time.Duration
	Commands         uint64 // Read, Write and Copy commands completed
	Chunks           int    // chunk buffers (or Copy commands) in flight at most
	ChunkBytes       int
}

// Copy copies blocks blocks from src at srcLBA to dst at dstLBA, on the
// calling goroutine (it polls the controllers' queues itself). Source and
// destination must have the same block size and, on one bdev, must not
// overlap. It returns when the copy is done, failed, or ctx ended (after the
// I/O in flight completed); the stats are valid in every case.
func Copy(ctx context.Context, dst *bdev.Bdev, dstLBA uint64, src *bdev.Bdev, srcLBA, blocks uint64, opts CopyOptions) (*CopyStats, error) {
	st := &CopyStats{Via: opts.Via}
	if err := checkRanges(dst, dstLBA, src, srcLBA, blocks); err != nil {
		return st, err
	}
	if opts.ChunkBytes <= 0 {
		opts.ChunkBytes = 128 << 10
	}
	if opts.InFlight <= 0 {
		opts.InFlight = 8
	}
	if opts.Wait <= 0 {
		opts.Wait = 10 * time.Second
	}
	bs := uint64(src.BlockSize())
	if opts.ChunkBytes < int(bs) {
		opts.ChunkBytes = int(bs)
	}
	sc, sns := bdev.NVMeNamespace(src)
	dc, dns := bdev.NVMeNamespace(dst)

	var region *Region
	var regionOwned bool
	switch opts.Via {
	case ViaCopy:
		if why := offloadBlocker(src, dst, sc, sns, dc, dns); why != "" {
			return st, kindf(ErrPath, "NVM Copy offload: %s; use --via cmb or --via host", why)
		}
	case ViaCMB:
		r, owned, err := pickRegion(sc, dc, opts.Region, opts.Others)
		if err != nil {
			return st, kindf(ErrPath, "%s -> %s: %v; use --via host to bounce through host memory", src.Name(), dst.Name(), err)
		}
		region, regionOwned = r, owned
	case ViaHost:
	case ViaAuto:
		why := offloadBlocker(src, dst, sc, sns, dc, dns)
		if why == "" {
			st.Via = ViaCopy
			break
		}
		r, owned, err := pickRegion(sc, dc, opts.Region, opts.Others)
		if err == nil {
			st.Via, region, regionOwned = ViaCMB, r, owned
			break
		}
		st.Via = ViaHost
		st.Fallback = fmt.Sprintf("no peer-to-peer path (%v); copying through host memory", err)
		if opts.Logf != nil {
			opts.Logf("%s -> %s: %s", src.Name(), dst.Name(), st.Fallback)
		}
	default:
		return st, kindf(ErrInvalid, "copy path %v", opts.Via)
	}
	if regionOwned {
		defer region.Close()
	}

	p, err := newPipe(dst, dstLBA, src, srcLBA, blocks, opts)
	if err != nil {
		return st, err
	}
	defer p.close()
	switch st.Via {
	case ViaCopy:
		st.Path = "nvm copy on " + sc.Name()
		err = p.setupCopy(sns)
	case ViaCMB:
		st.Path = region.Name()
		err = p.setupCMB(ctx, region, sc, dc, opts)
	case ViaHost:
		st.Path = "host memory"
		err = p.setupHost(sc, dc)
	}
	if err != nil {
		return st, err
	}
	st.Chunks, st.ChunkBytes = len(p.slots), int(p.per*bs)
	start := time.Now()
	err = p.run(ctx)
	st.Elapsed = time.Since(start)
	st.Bytes = p.done * bs
	st.Commands = p.commands
	if st.Via == ViaHost {
		st.BytesThroughHost = st.Bytes
	}
	return st, err
}

func checkRanges(dst *bdev.Bdev, dstLBA uint64, src *bdev.Bdev, srcLBA, blocks uint64) error {
	if blocks == 0 {
		return kindf(ErrInvalid, "copy of 0 blocks")
	}
	if src.BlockSize() != dst.BlockSize() {
		return kindf(ErrInvalid, "%s has %d-byte blocks, %s %d-byte blocks", src.Name(), src.BlockSize(), dst.Name(), dst.BlockSize())
	}
	if srcLBA >= src.NumBlocks() || blocks > src.NumBlocks()-srcLBA {
		return kindf(ErrInvalid, "source blocks %d+%d run past the end of %s (%d blocks)", srcLBA, blocks, src.Name(), src.NumBlocks())
	}
	if dstLBA >= dst.NumBlocks() || blocks > dst.NumBlocks()-dstLBA {
		return kindf(ErrInvalid, "destination blocks %d+%d run past the end of %s (%d blocks)", dstLBA, blocks, dst.Name(), dst.NumBlocks())
	}
	if sameBdev(src, dst) && srcLBA < dstLBA+blocks && dstLBA < srcLBA+blocks {
		return kindf(ErrInvalid, "source %d+%d and destination %d+%d overlap on %s", srcLBA, blocks, dstLBA, blocks, src.Name())
	}
	return nil
}

// sameBdev reports whether a and b are the same storage: the same bdev, or
// bdevs of one namespace of one controller.
func sameBdev(a, b *bdev.Bdev) bool {
	if a == b {
		return true
	}
	ac, ans := bdev.NVMeNamespace(a)
	bc, bns := bdev.NVMeNamespace(b)
	return ac != nil && ac == bc && ans.ID == bns.ID
}

// offloadBlocker returns why NVM Copy cannot do this copy, or "".
func offloadBlocker(src, dst *bdev.Bdev, sc *nvme.Controller, sns *nvme.Namespace, dc *nvme.Controller, dns *nvme.Namespace) string {
	switch {
	case sc == nil || dc == nil:
		return "source and destination must be NVMe namespaces"
	case sc != dc:
		return fmt.Sprintf("source (%s) and destination (%s) are on different controllers", sc.Name(), dc.Name())
	case sns.ID != dns.ID:
		return fmt.Sprintf("source (namespace %d) and destination (namespace %d) differ, and only the single-namespace descriptor format 0h is used", sns.ID, dns.ID)
	case !sc.Supports(nvme.OpCopy) || !dst.Supports(bdev.Copy):
		return fmt.Sprintf("%s does not support Copy (ONCS bit 8)", sc.Name())
	}
	return ""
}

// pickRegion returns the CMB to stage in: given, else the destination's,
// else the source's, else one of others'. owned says the caller must Close
// it.
func pickRegion(sc, dc *nvme.Controller, given *Region, others []*nvme.Controller) (*Region, bool, error) {
	if sc == nil || dc == nil {
		return nil, false, kindf(ErrPath, "staging in a CMB needs NVMe namespaces on both sides")
	}
	check := func(r *Region) error {
		if !r.CanRead(sc) {
			return kindf(ErrPath, "%s may not hold read data for its owner (CMBSZ.RDS clear)", r.Name())
		}
		if !r.CanWrite(dc) {
			return kindf(ErrPath, "%s may not hold write data for its owner (CMBSZ.WDS clear)", r.Name())
		}
		for _, c := range []*nvme.Controller{sc, dc} {
			if _, err := r.Peer(c); err != nil {
				return kindf(ErrPath, "%v", err)
			}
		}
		return nil
	}
	if given != nil {
		return given, false, check(given)
	}
	var why []string
	cands := []*nvme.Controller{dc}
	if sc != dc {
		cands = append(cands, sc)
	}
	for _, c := range others {
		if c != sc && c != dc {
			cands = append(cands, c)
		}
	}
	for _, c := range cands {
		r, err := Open(c)
		if err != nil {
			if c == sc || c == dc || !errors.Is(err, ErrNoCMB) { // quiet about bystanders without one
				why = append(why, err.Error())
			}
			continue
		}
		if err := check(r); err != nil {
			r.Close()
			why = append(why, err.Error())
			continue
		}
		return r, true, nil
	}
	return nil, false, kindf(ErrPath, "no usable CMB: %s", strings.Join(why, "; "))
}

// shareHostMemory reports whether DMA memory of a's transport is reachable by
// b's controller at the same address.
func shareHostMemory(a, b *nvme.Controller) bool {
	if a == b {
		return true
	}
	sh, ok := a.Transport().(HostMemorySharer)
	return ok && sh.SharesHostMemory(b.Transport())
}

// pipe is the copy engine: slots cycle free -> reading -> writing -> free
// (or free -> copying -> free), all on the calling goroutine.
type pipe struct {
	src, dst          *bdev.Bdev
	sdesc, ddesc      *bdev.Desc
	sch, dch          *bdev.Channel
	srcLBA, dstLBA    uint64
	blocks, bs, per   uint64
	inFlight          int
	next, done        uint64
	commands          uint64
	slots             []slot
	idle              []*slot
	ready             []*slot // read, waiting for a write slot on dch
	err               error
	readCB, writeCB   func(*bdev.IO)
	copyCB            func(*bdev.IO)
	offload           bool
	freeSlot          func(*slot)
	region            *Region
	sbufs, dbufs      []bdev.Buffer // host buffers to free
	outstandingReads  int
	outstandingWrites int
}

type slot struct {
	rbuf, wbuf bdev.Buffer
	rio, wio   bdev.Buffer // the parts of rbuf and wbuf the I/O in flight moves
	bounce     bool
	blk        Block
	idx, n     uint64
}

func newPipe(dst *bdev.Bdev, dstLBA uint64, src *bdev.Bdev, srcLBA, blocks uint64, opts CopyOptions) (*pipe, error) {
	p := &pipe{src: src, dst: dst, srcLBA: srcLBA, dstLBA: dstLBA, blocks: blocks, bs: uint64(src.BlockSize()), inFlight: opts.InFlight}
	p.per = max(uint64(opts.ChunkBytes)/p.bs, 1)
	var err error
	if p.ddesc, err = bdev.Open(dst, true); err != nil {
		return nil, errors.Wrapf(err, "open %s for writing", dst.Name())
	}
	if src == dst {
		p.sdesc = p.ddesc
	} else if p.sdesc, err = bdev.Open(src, false); err != nil {
		p.ddesc.Close()
		return nil, errors.Wrapf(err, "open %s", src.Name())
	}
	p.readCB, p.writeCB, p.copyCB = p.readDone, p.writeDone, p.copyDone
	return p, nil
}

func (p *pipe) channels(depth int) error {
	var err error
	if p.dch, err = p.ddesc.NewChannel(depth); err != nil {
		return errors.Wrapf(err, "channel of %s", p.dst.Name())
	}
	if p.sdesc == p.ddesc {
		p.sch = p.dch
	} else if p.sch, err = p.sdesc.NewChannel(depth); err != nil {
		return errors.Wrapf(err, "channel of %s", p.src.Name())
	}
	return nil
}

func (p *pipe) setupCopy(ns *nvme.Namespace) error {
	p.offload = true
	// One source range per command, within the namespace's Copy limits.
	limit := uint64(65536)
	if id := ns.Identify; id != nil {
		if id.MSSRL != 0 {
			limit = min(limit, uint64(id.MSSRL))
		}
		if id.MCL != 0 {
			limit = min(limit, uint64(id.MCL))
		}
	}
	p.per = limit
	p.slots = make([]slot, p.inFlight)
	return p.finishSetup()
}

func (p *pipe) setupCMB(ctx context.Context, r *Region, sc, dc *nvme.Controller, opts CopyOptions) error {
	rview, err := r.Peer(sc)
	if err != nil {
		return err
	}
	wview, err := r.Peer(dc)
	if err != nil {
		return err
	}
	p.region = r
	chunk := int(p.per * p.bs)
	if max := r.Size() / 2; uint64(chunk) > max { // leave room for a second chunk
		chunk = int(max / p.bs * p.bs)
		if chunk < int(p.bs) {
			return kindf(ErrPath, "%s (%d bytes) is too small for a %d-byte block", r.Name(), r.Size(), p.bs)
		}
	}
	p.per = uint64(chunk) / p.bs
	// The first chunk waits for space (back-pressure); the others take what
	// is free now.
	wctx, cancel := context.WithTimeout(ctx, opts.Wait)
	defer cancel()
	first, err := r.AllocWait(wctx, chunk)
	if err != nil {
		return kindf(ErrFull, "%s stayed full for %v: %v", r.Name(), opts.Wait, err)
	}
	blks := []Block{first}
	for len(blks) < p.inFlight {
		b, err := r.Alloc(chunk)
		if err != nil {
			break
		}
		blks = append(blks, b)
	}
	p.slots = make([]slot, len(blks))
	for i, b := range blks {
		p.slots[i] = slot{blk: b, rbuf: b.Buffer(rview), wbuf: b.Buffer(wview)}
	}
	return p.finishSetup()
}

func (p *pipe) setupHost(sc, dc *nvme.Controller) error {
	chunk := int(p.per * p.bs)
	shared := sc == nil || dc == nil || shareHostMemory(sc, dc)
	p.slots = make([]slot, p.inFlight)
	for i := range p.slots {
		s := &p.slots[i]
		// A non-NVMe side takes any memory: allocate from the NVMe side.
		from := p.sdesc
		if sc == nil && dc != nil {
			from = p.ddesc
		}
		b, err := from.AllocBuffer(chunk)
		if err != nil {
			return errors.Wrapf(err, "host buffer for %s", from.Bdev().Name())
		}
		if from == p.ddesc {
			p.dbufs = append(p.dbufs, b)
		} else {
			p.sbufs = append(p.sbufs, b)
		}
		s.rbuf, s.wbuf = b, b
		if !shared {
			w, err := p.ddesc.AllocBuffer(chunk)
			if err != nil {
				return errors.Wrapf(err, "host buffer for %s", p.dst.Name())
			}
			p.dbufs = append(p.dbufs, w)
			s.wbuf, s.bounce = w, true
		}
	}
	return p.finishSetup()
}

func (p *pipe) finishSetup() error {
	p.idle = make([]*slot, 0, len(p.slots))
	p.ready = make([]*slot, 0, len(p.slots))
	for i := range p.slots {
		p.idle = append(p.idle, &p.slots[i])
	}
	return p.channels(len(p.slots))
}

func (p *pipe) fail(err error) {
	if p.err == nil {
		p.err = err
	}
}

func (p *pipe) readDone(io *bdev.IO) {
	s := io.Arg.(*slot)
	p.outstandingReads--
	p.commands++
	if err := io.Err(); err != nil {
		p.fail(errors.Wrapf(err, "read %s blocks %d+%d", p.src.Name(), p.srcLBA+s.idx, s.n))
		p.idle = append(p.idle, s)
		return
	}
	if s.bounce {
		n := s.n * p.bs
		copy(s.wbuf.Bytes[:n], s.rbuf.Bytes[:n])
	}
	p.ready = append(p.ready, s)
}

func (p *pipe) writeDone(io *bdev.IO) {
	s := io.Arg.(*slot)
	p.outstandingWrites--
	p.commands++
	if err := io.Err(); err != nil {
		p.fail(errors.Wrapf(err, "write %s blocks %d+%d", p.dst.Name(), p.dstLBA+s.idx, s.n))
	} else {
		p.done += s.n
	}
	p.idle = append(p.idle, s)
}

func (p *pipe) copyDone(io *bdev.IO) {
	s := io.Arg.(*slot)
	p.outstandingWrites--
	p.commands++
	if err := io.Err(); err != nil {
		p.fail(errors.Wrapf(err, "copy %s blocks %d+%d to %d", p.src.Name(), p.srcLBA+s.idx, s.n, p.dstLBA+s.idx))
	} else {
		p.done += s.n
	}
	p.idle = append(p.idle, s)
}

// issue starts the writes of read chunks and the reads (or copies) of free
// slots. It allocates nothing.
func (p *pipe) issue() {
	for len(p.ready) > 0 && p.err == nil {
		s := p.ready[0]
		n := s.n * p.bs
		s.wio = s.wbuf.Slice(0, int(n))
		err := p.dch.Write(&s.wio, p.dstLBA+s.idx, s.n, p.writeCB, s)
		if errors.Is(err, bdev.ErrNoIO) {
			break
		}
		p.ready = p.ready[:copy(p.ready, p.ready[1:])]
		if err != nil {
			p.fail(errors.Wrapf(err, "write %s blocks %d+%d", p.dst.Name(), p.dstLBA+s.idx, s.n))
			p.idle = append(p.idle, s)
			break
		}
		p.outstandingWrites++
	}
	for len(p.idle) > 0 && p.next < p.blocks && p.err == nil {
		s := p.idle[len(p.idle)-1]
		s.idx, s.n = p.next, min(p.per, p.blocks-p.next)
		var err error
		if p.offload {
			err = p.dch.Copy(p.dstLBA+s.idx, p.srcLBA+s.idx, s.n, p.copyCB, s)
		} else {
			s.rio = s.rbuf.Slice(0, int(s.n*p.bs))
			err = p.sch.Read(&s.rio, p.srcLBA+s.idx, s.n, p.readCB, s)
		}
		if errors.Is(err, bdev.ErrNoIO) {
			break
		}
		if err != nil {
			p.fail(errors.Wrapf(err, "start %s blocks %d+%d", p.src.Name(), p.srcLBA+s.idx, s.n))
			break
		}
		p.idle = p.idle[:len(p.idle)-1]
		p.next += s.n
		if p.offload {
			p.outstandingWrites++
		} else {
			p.outstandingReads++
		}
	}
}

func (p *pipe) poll() int {
	n := p.sch.Poll()
	if p.dch != p.sch {
		n += p.dch.Poll()
	}
	return n
}

func (p *pipe) outstanding() int { return p.outstandingReads + p.outstandingWrites }

// run drives the copy until every block is written, an I/O fails or ctx
// ends; then it waits for the I/O in flight (the driver's command timeouts
// bound that wait).
func (p *pipe) run(ctx context.Context) error {
	idle := 0
	for p.err == nil && p.done < p.blocks {
		p.issue()
		if p.poll() > 0 {
			idle = 0
			continue
		}
		if idle++; idle&1023 == 0 {
			if err := ctx.Err(); err != nil {
				p.fail(err)
				break
			}
			runtime.Gosched()
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for p.outstanding() > 0 {
		if p.poll() == 0 {
			if time.Now().After(deadline) {
				p.fail(errors.Errorf("p2pdma: %d I/Os still outstanding after 2 minutes", p.outstanding()))
				return p.err
			}
			runtime.Gosched()
		}
	}
	return p.err
}

func (p *pipe) close() {
	if p.sch != nil && p.sch != p.dch {
		p.sch.Close()
	}
	if p.dch != nil {
		p.dch.Close()
	}
	if p.region != nil {
		for i := range p.slots {
			p.region.Free(p.slots[i].blk)
		}
	}
	for _, b := range p.sbufs {
		p.sdesc.FreeBuffer(b)
	}
	for _, b := range p.dbufs {
		p.ddesc.FreeBuffer(b)
	}
	if p.sdesc != p.ddesc {
		p.sdesc.Close()
	}
	p.ddesc.Close()
}
