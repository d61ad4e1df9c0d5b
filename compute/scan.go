package compute

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/compute/abi"
	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/compute/image"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/poller"
	"github.com/pkg/errors"
)

// Bdev is the compute bdev: a virtual device over base namespaces, each
// opened and claimed so that nothing else writes to them while programs scan
// them.
type Bdev struct {
	name  string
	bases []*bdev.Bdev
	descs []*bdev.Desc
}

// NewBdev claims bases for the compute bdev name.
func NewBdev(name string, bases []*bdev.Bdev) (*Bdev, error) {
	if len(bases) == 0 {
		return nil, errors.Errorf("compute bdev %s: no base bdevs", name)
	}
	cb := &Bdev{name: name, bases: bases}
	for _, b := range bases {
		d, err := bdev.Open(b, false)
		if err != nil {
			cb.Close()
			return nil, errors.Wrapf(err, "compute bdev %s", name)
		}
		if err := d.Claim("compute:" + name); err != nil {
			d.Close()
			cb.Close()
			return nil, errors.Wrapf(err, "compute bdev %s", name)
		}
		cb.descs = append(cb.descs, d)
	}
	return cb, nil
}

// Name returns the compute bdev's name.
func (cb *Bdev) Name() string { return cb.name }

// Bases returns the base bdevs in order.
func (cb *Bdev) Bases() []*bdev.Bdev { return cb.bases }

// Close releases the claims.
func (cb *Bdev) Close() error {
	for _, d := range cb.descs {
		d.Close()
	}
	cb.descs = nil
	return nil
}

// Target is a range of blocks of one base bdev to scan.
type Target struct {
	Base   int    // index into Bases
	Start  uint64 // first block
	Blocks uint64 // number of blocks; 0 means to the end of the base
}

// AllTargets returns one target per base covering the whole base.
func (cb *Bdev) AllTargets() []Target {
	t := make([]Target, len(cb.bases))
	for i := range t {
		t[i] = Target{Base: i}
	}
	return t
}

// Match is one matching block.
type Match struct {
	Target int    // index into the targets given to Scan
	NSID   uint32 // namespace id of the base (0 for non-NVMe bases)
	LBA    uint64
	Offset uint32 // byte offset within the block (scanners)
}

// EngineKind selects where programs run.
type EngineKind int

// Engine choices.
const (
	// EngineAuto offloads a target to a compute-capable controller that can
	// reach its data and runs it on host cores otherwise.
	EngineAuto EngineKind = iota
	// EngineDevice requires offload; a target no compute device reaches fails.
	EngineDevice
	// EngineHost runs every target on host compute cores.
	EngineHost
)

// ParseEngine parses "auto", "device" or "host".
func ParseEngine(s string) (EngineKind, error) {
	switch s {
	case "auto":
		return EngineAuto, nil
	case "device":
		return EngineDevice, nil
	case "host":
		return EngineHost, nil
	}
	return 0, errors.Errorf("unknown engine %q (want auto, device or host)", s)
}

// Options tune Scan.
type Options struct {
	Engine EngineKind
	// ChunkBytes is the size of one program run's data (rounded down to the
	// base's block size); 0 means 256 KiB.
	ChunkBytes int
	// InFlight is the number of chunks in flight per job; 0 means 4.
	InFlight int
	// EmitCap is the number of values one chunk's run may emit; 0 means one
	// per block, at least 1024.
	EmitCap int
	// OnMatch receives every match, on the goroutine that called Scan.
	OnMatch func(Match)
	// Staging, when set, provides the chunk buffers that host engines read
	// into — for example memory in a peer controller's CMB, so that data
	// reaches the program without crossing host DRAM. Nil means DMA memory of
	// each base (host DRAM).
	Staging Staging
	// Progress, when set, receives the bytes scanned so far about every
	// ProgressEvery (default 200 ms), on the goroutine that called Scan.
	Progress      func(scanned, total uint64)
	ProgressEvery time.Duration
	// Devices are controllers the scan may offload to; those whose Identify
	// data shows the Computational Programs and Subsystem Local Memory
	// command sets are used (others are ignored).
	Devices []*nvme.Controller
}

// Staging is where host engines stage the chunks they read.
type Staging interface {
	// Alloc returns a buffer of size bytes that base's controller can DMA
	// into and the host CPU can read.
	Alloc(base *bdev.Bdev, size int) (bdev.Buffer, error)
	// Free releases a buffer from Alloc.
	Free(base *bdev.Bdev, b bdev.Buffer) error
	// ThroughHost reports whether staged bytes sit in host DRAM.
	ThroughHost() bool
	// Name describes the staging memory, e.g. "host" or "cmb of mock2".
	Name() string
}

// ChunkFault is a chunk whose read or program run failed. Only that chunk's
// results are missing.
type ChunkFault struct {
	Target int
	Base   string
	LBA    uint64
	Blocks uint64
	Err    error
}

func (f ChunkFault) Error() string {
	return fmt.Sprintf("%s blocks %d-%d: %v", f.Base, f.LBA, f.LBA+f.Blocks-1, f.Err)
}

// EngineStats is what one engine did in a scan.
type EngineStats struct {
	Name         string        // "host" or the compute controller's name
	Targets      int           // targets it scanned
	Chunks       uint64        // program runs
	BytesScanned uint64        // bytes the program read
	RunTime      time.Duration // time spent running the program
}

// TargetStats is what a scan did on one target.
type TargetStats struct {
	Base         string
	NSID         uint32
	Engine       string
	Blocks       uint64
	BytesScanned uint64
	Matches      uint64
}

// Stats summarises a scan.
type Stats struct {
	Matches      uint64
	BytesScanned uint64
	// BytesToHost counts bytes delivered to host memory: the data itself for
	// host engines, only the match lists for offloaded targets.
	BytesToHost uint64
	// BytesThroughHost counts payload bytes that crossed host DRAM on their
	// way to the program.
	BytesThroughHost uint64
	Elapsed          time.Duration
	Overflows        uint64 // runs that emitted more than EmitCap values
	Engines          []EngineStats
	Targets          []TargetStats
	Faults           []ChunkFault
	// Maps are the program's maps merged over every instance.
	Maps []engine.MapData
}

// Scan runs exe over targets and streams matches to opts.OnMatch. It returns
// when every target is done, or, after ctx ends, when the chunks in flight
// are; then the error is ctx's. Faulty chunks are reported in Stats.Faults
// and do not stop the scan.
//
// Per target the engine is chosen by opts.Engine: EngineAuto offloads to a
// compute-capable controller of opts.Devices that reaches the target's data
// and scans on host cores otherwise, EngineDevice fails unless every target
// can be offloaded, EngineHost never offloads.
func (cb *Bdev) Scan(ctx context.Context, g *poller.Group, exe *engine.Executable, targets []Target, opts Options) (*Stats, error) {
	if cb.descs == nil {
		return nil, errors.Errorf("compute bdev %s: closed", cb.name)
	}
	if opts.ChunkBytes == 0 {
		opts.ChunkBytes = 256 << 10
	}
	if opts.InFlight <= 0 {
		opts.InFlight = 4
	}
	if opts.ProgressEvery <= 0 {
		opts.ProgressEvery = 200 * time.Millisecond
	}
	if opts.ChunkBytes < 0 || opts.ChunkBytes > 64<<20 {
		return nil, errors.Errorf("compute bdev %s: chunk size %d is outside 1 B-64 MiB", cb.name, opts.ChunkBytes)
	}
	reactors := g.Reactors()
	st := &Stats{Engines: []EngineStats{{Name: "host"}}}
	var devs []*offDevice
	if opts.Engine != EngineHost && len(opts.Devices) > 0 {
		img, err := image.Encode(exe.Program())
		if err != nil {
			return nil, errors.Wrapf(err, "compute bdev %s", cb.name)
		}
		if devs, err = openOffload(opts.Devices, img); err != nil {
			if opts.Engine == EngineDevice {
				return nil, errors.Wrapf(err, "compute bdev %s", cb.name)
			}
			devs = nil // auto: a device that refuses the program leaves the work to the host
		}
		defer closeOffload(devs)
	}
	var jobs []job
	var total uint64
	for ti, t := range targets {
		if t.Base < 0 || t.Base >= len(cb.bases) {
			stopScanJobs(jobs)
			return nil, errors.Errorf("compute bdev %s: target %d names base %d of %d", cb.name, ti, t.Base, len(cb.bases))
		}
		b := cb.bases[t.Base]
		n := t.Blocks
		if n == 0 {
			n = b.NumBlocks() - min(t.Start, b.NumBlocks())
		}
		if t.Start >= b.NumBlocks() || n > b.NumBlocks()-t.Start {
			stopScanJobs(jobs)
			return nil, errors.Errorf("compute bdev %s: target %d, blocks %d+%d, runs past the end of %s (%d blocks)", cb.name, ti, t.Start, n, b.Name(), b.NumBlocks())
		}
		total += n * uint64(b.BlockSize())
		// Split each target over the reactors so one namespace keeps every
		// core busy; small targets stay whole.
		parts := uint64(len(reactors))
		chunkBlocks := max(uint64(opts.ChunkBytes/b.BlockSize()), 1)
		if n < parts*chunkBlocks*uint64(opts.InFlight) {
			parts = 1
		}
		per := (n + parts - 1) / parts
		dev := cb.offloadFor(devs, b, t.Start, opts.Engine)
		if dev == nil && opts.Engine == EngineDevice {
			stopScanJobs(jobs)
			return nil, errors.Errorf("compute bdev %s: target %d (%s): no compute-capable controller can reach its data (offload needs a controller with the Computational Programs and Subsystem Local Memory command sets that can copy from the namespace)", cb.name, ti, b.Name())
		}
		var planned []job
		var err error
		for p := uint64(0); p < parts && err == nil; p++ {
			lo := t.Start + p*per
			hi := min(lo+per, t.Start+n)
			if lo >= hi {
				break
			}
			r := reactors[(ti+int(p))%len(reactors)]
			var j job
			if dev != nil {
				j, err = newOffJob(r, dev, b, exe.Program().Type, ti, lo, hi, chunkBlocks, opts)
			} else {
				j, err = newScanJob(r, cb.descs[t.Base], exe, ti, lo, hi, chunkBlocks, opts)
			}
			if err == nil {
				planned = append(planned, j)
			}
		}
		if err != nil && dev != nil && errors.Is(err, errNoDeviceMemory) && opts.Engine == EngineAuto {
			// The device is full: scan this target on host cores.
			stopScanJobs(planned)
			planned, dev, err = nil, nil, nil
			for p := uint64(0); p < parts && err == nil; p++ {
				lo := t.Start + p*per
				hi := min(lo+per, t.Start+n)
				if lo >= hi {
					break
				}
				var j job
				if j, err = newScanJob(reactors[(ti+int(p))%len(reactors)], cb.descs[t.Base], exe, ti, lo, hi, chunkBlocks, opts); err == nil {
					planned = append(planned, j)
				}
			}
		}
		if err != nil {
			stopScanJobs(planned)
			stopScanJobs(jobs)
			return nil, errors.Wrapf(err, "compute bdev %s: target %d (%s)", cb.name, ti, b.Name())
		}
		for _, j := range planned {
			if j, ok := j.(*scanJob); ok {
				// A cancelled scan stops its programs wherever they are; they
				// watch ctx themselves, since the goroutine that would tell
				// them waits for a core while programs occupy every core.
				j.inst.SetContext(ctx)
			}
		}
		jobs = append(jobs, planned...)
		engName := "host"
		if dev != nil {
			if dev.stats == 0 {
				dev.stats = len(st.Engines)
				st.Engines = append(st.Engines, EngineStats{Name: dev.c.Name()})
			}
			engName = dev.c.Name()
			st.Engines[dev.stats].Targets++
		} else {
			st.Engines[0].Targets++
		}
		st.Targets = append(st.Targets, TargetStats{Base: b.Name(), NSID: b.Info().NSID, Engine: engName, Blocks: n})
	}
	start := time.Now()
	for _, j := range jobs {
		if err := j.start(); err != nil {
			stopScanJobs(jobs)
			return nil, err
		}
	}
	// Drain matches until every job is done.
	tick := time.NewTicker(opts.ProgressEvery)
	defer tick.Stop()
	var buf [256]Match
	remaining := len(jobs)
	cancelled := false
	idle := 0
	for remaining > 0 {
		got := 0
		remaining = 0
		for _, jj := range jobs {
			j := jj.base()
			n := j.matches.PopBatch(buf[:])
			got += n
			for _, m := range buf[:n] {
				st.Matches++
				st.Targets[m.Target].Matches++
				if opts.OnMatch != nil {
					opts.OnMatch(m)
				}
			}
			if !j.finished.Load() || j.matches.Len() > 0 {
				remaining++
			}
		}
		if !cancelled && ctx.Err() != nil {
			cancelled = true
			for _, j := range jobs {
				j.base().cancel.Store(true)
			}
		}
		select {
		case <-tick.C:
			if opts.Progress != nil {
				var done uint64
				for _, j := range jobs {
					done += j.base().pubScanned.Load()
				}
				opts.Progress(done, total)
			}
		default:
		}
		if got == 0 {
			idle++
			if idle > 64 {
				time.Sleep(50 * time.Microsecond)
			}
		} else {
			idle = 0
		}
	}
	st.Elapsed = time.Since(start)
	var insts []*engine.Instance
	var hostBytes, deviceToHost uint64
	for _, jj := range jobs {
		j := jj.base()
		ts := &st.Targets[j.target]
		ts.BytesScanned += j.scanned
		st.BytesScanned += j.scanned
		st.Overflows += j.overflows
		st.Faults = append(st.Faults, j.faults...)
		es := &st.Engines[0]
		switch x := jj.(type) {
		case *scanJob:
			hostBytes += j.scanned
			insts = append(insts, x.inst)
		case *offJob:
			es = &st.Engines[x.dev.stats]
			deviceToHost += x.toHost
		}
		es.Chunks += j.chunkCount
		es.BytesScanned += j.scanned
		es.RunTime += time.Duration(j.runNS)
	}
	stopScanJobs(jobs)
	// Host engines bring every byte to the host CPU (staged in a peer's CMB
	// it never touches host DRAM); offloaded targets deliver only their
	// match lists and the program's maps.
	st.BytesToHost = hostBytes + deviceToHost
	if opts.Staging == nil || opts.Staging.ThroughHost() {
		st.BytesThroughHost = hostBytes
	}
	st.Maps = engine.MergeMaps(insts...)
	if len(insts) == 0 {
		st.Maps = nil
	}
	var stateErr error
	for _, d := range devs {
		if d.stats == 0 || !hasWritableMaps(exe.Program()) {
			continue
		}
		maps, moved, err := d.state()
		st.BytesToHost += moved
		if err != nil {
			stateErr = err
			continue
		}
		st.Maps = mergeMapData(st.Maps, maps)
	}
	if cancelled {
		return st, ctx.Err()
	}
	return st, stateErr
}

func hasWritableMaps(p *engine.Program) bool {
	for _, m := range p.Maps {
		if !m.ReadOnly {
			return true
		}
	}
	return false
}

// offloadFor returns the compute device that takes target base b, or nil.
func (cb *Bdev) offloadFor(devs []*offDevice, b *bdev.Bdev, start uint64, kind EngineKind) *offDevice {
	if kind == EngineHost {
		return nil
	}
	c, ns := bdev.NVMeNamespace(b)
	if c == nil {
		return nil
	}
	for _, d := range devs {
		if d.reaches(c, ns, start) {
			return d
		}
	}
	return nil
}

// jobBase is what every scan job (host or offload) shares with Scan: the
// match ring, the published progress and the counters read after the end.
type jobBase struct {
	r        *poller.Reactor
	target   int
	baseName string

	scanned, overflows, chunkCount uint64
	runNS                          int64
	faults                         []ChunkFault

	matches    *poller.SPSC[Match]
	finished   atomic.Bool
	cancel     atomic.Bool
	pubScanned atomic.Uint64
	done       chan struct{}
}

// push moves matches from *out to the ring; false if the ring filled first.
func (j *jobBase) push(out *[]Match) bool {
	o := *out
	k := 0
	for k < len(o) && j.matches.Push(o[k]) {
		k++
	}
	*out = o[:copy(o, o[k:])]
	return len(*out) == 0
}

func (j *jobBase) base() *jobBase { return j }

// job is a host scan job or an offload job.
type job interface {
	base() *jobBase
	start() error
	stop()
}

// scanJob scans blocks [next, end) of one base on one reactor. All fields
// but the published ones are owned by the reactor.
type scanJob struct {
	jobBase
	desc    *bdev.Desc
	staging Staging
	inst    *engine.Instance
	typ     abi.Type
	nsid    uint32
	bs      uint64
	next    uint64
	end     uint64
	per     uint64 // blocks per chunk
	ch      *bdev.Channel
	poll    *poller.Poller
	chunks  []chunk
	// pending are chunks whose matches did not fit in the ring yet.
	pending  []*chunk
	stopping bool
}

type chunk struct {
	j      *scanJob
	buf    bdev.Buffer
	lba    uint64
	blocks uint64
	emit   []uint64
	out    []Match // matches not yet pushed to the ring
}

func newScanJob(r *poller.Reactor, d *bdev.Desc, exe *engine.Executable, target int, lo, hi, per uint64, opts Options) (*scanJob, error) {
	b := d.Bdev()
	ring, err := poller.NewSPSC[Match](4096)
	if err != nil {
		return nil, err
	}
	j := &scanJob{
		jobBase: jobBase{r: r, target: target, baseName: b.Name(), matches: ring, done: make(chan struct{})},
		desc:    d, inst: exe.NewInstance(), typ: exe.Program().Type,
		nsid: b.Info().NSID, bs: uint64(b.BlockSize()),
		next: lo, end: hi, per: per,
	}
	emitCap := opts.EmitCap
	if emitCap <= 0 {
		emitCap = max(int(per), 1024)
	}
	j.chunks = make([]chunk, opts.InFlight)
	j.staging = opts.Staging
	for i := range j.chunks {
		var buf bdev.Buffer
		var err error
		if j.staging != nil {
			buf, err = j.staging.Alloc(b, int(per*j.bs))
			err = errors.Wrapf(err, "compute: stage %s in %s", b.Name(), j.staging.Name())
		} else {
			buf, err = d.AllocBuffer(int(per * j.bs))
		}
		if err != nil {
			j.free()
			return nil, err
		}
		j.chunks[i] = chunk{j: j, buf: buf, emit: make([]uint64, emitCap), out: make([]Match, 0, emitCap)}
	}
	j.pending = make([]*chunk, 0, len(j.chunks))
	return j, nil
}

func (j *scanJob) free() {
	for _, c := range j.chunks {
		switch {
		case c.buf.Bytes == nil:
		case j.staging != nil:
			j.staging.Free(j.desc.Bdev(), c.buf)
		default:
			j.desc.FreeBuffer(c.buf)
		}
	}
	j.chunks = nil
}

func (j *scanJob) start() error {
	err := j.r.Call(func() error {
		ch, err := j.desc.NewChannel(len(j.chunks))
		if err != nil {
			return err
		}
		p, err := j.r.Register("scan", j.pollOnce, 0)
		if err != nil {
			ch.Close()
			return err
		}
		j.ch, j.poll = ch, p
		for i := range j.chunks {
			j.issue(&j.chunks[i])
		}
		return nil
	})
	return errors.Wrapf(err, "compute: start scan on core %d", j.r.Core())
}

// issue reads the next chunk into c, if any is left.
func (j *scanJob) issue(c *chunk) {
	if j.next >= j.end || j.stopping {
		return
	}
	c.lba = j.next
	c.blocks = min(j.per, j.end-j.next)
	j.next += c.blocks
	if err := j.ch.Read(&c.buf, c.lba, c.blocks, onChunkRead, c); err != nil {
		j.fault(c, err)
	}
}

func (j *scanJob) fault(c *chunk, err error) {
	j.faults = append(j.faults, ChunkFault{Target: j.target, Base: j.desc.Bdev().Name(), LBA: c.lba, Blocks: c.blocks, Err: err})
}

func onChunkRead(io *bdev.IO) {
	c := io.Arg.(*chunk)
	j := c.j
	if err := io.Err(); err != nil {
		j.fault(c, errors.Wrap(err, "read"))
	} else {
		j.run(c)
	}
	if len(c.out) > 0 && !j.push(&c.out) {
		j.pending = append(j.pending, c)
		return
	}
	j.issue(c)
}

// run runs the program on a chunk and collects its matches in c.out.
func (j *scanJob) run(c *chunk) {
	n := c.blocks * j.bs
	ctx := engine.Context{Data: c.buf.Bytes[:n], LBA: c.lba, NSID: j.nsid, BlockSize: uint32(j.bs), BlockCount: uint32(c.blocks)}
	t0 := time.Now()
	res, err := j.inst.Run(&ctx, c.emit)
	j.runNS += int64(time.Since(t0))
	j.chunkCount++
	j.scanned += n
	j.pubScanned.Store(j.scanned)
	if err != nil {
		j.fault(c, errors.Wrap(err, "program"))
		return
	}
	if res.Overflow {
		j.overflows++
	}
	for _, v := range c.emit[:res.Emitted] {
		m := Match{Target: j.target, NSID: j.nsid}
		if j.typ == abi.TypeFilter {
			m.LBA = v
		} else {
			if v >= n {
				c.out = c.out[:0]
				j.fault(c, errors.Errorf("program emitted offset %d outside its %d-byte chunk", v, n))
				return
			}
			m.LBA = c.lba + v/j.bs
			m.Offset = uint32(v % j.bs)
		}
		c.out = append(c.out, m)
	}
}

func (j *scanJob) pollOnce() poller.Status {
	if j.finished.Load() {
		return poller.Idle
	}
	n := j.ch.Poll()
	if j.cancel.Load() {
		j.stopping = true
	}
	// Chunks held back by a full ring go out first, then read on.
	for len(j.pending) > 0 && j.push(&j.pending[0].out) {
		c := j.pending[0]
		j.pending = j.pending[:copy(j.pending, j.pending[1:])]
		j.issue(c)
		n++
	}
	if j.ch.Outstanding() == 0 && len(j.pending) == 0 && (j.next >= j.end || j.stopping) {
		j.poll.Unregister()
		j.finished.Store(true)
		close(j.done)
	}
	if n > 0 {
		return poller.Busy
	}
	return poller.Idle
}

func stopScanJobs(jobs []job) {
	for _, j := range jobs {
		j.stop()
	}
}

func (j *scanJob) stop() {
	if j.ch != nil {
		j.r.Call(func() error {
			j.poll.Unregister()
			return j.ch.Close()
		})
		j.ch = nil
	}
	j.free()
}
