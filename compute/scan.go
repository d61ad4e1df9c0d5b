package compute

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/compute/abi"
	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/compute/internal/image"
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
	// tails are, by base, the bytes of a partial last block (0: whole).
	tails []uint64
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

// SetLength says that base's data ends at byte bytes, inside its last block
// (a file namespace whose size is not a multiple of its block size: the
// device reads the rest of that block as zeroes). Runs then see the last
// block as a short block: its data_end lies bytes after the start of the
// base, and a scan counts only those bytes.
func (cb *Bdev) SetLength(base int, bytes uint64) error {
	if base < 0 || base >= len(cb.bases) {
		return errors.Errorf("compute bdev %s: no base %d", cb.name, base)
	}
	b := cb.bases[base]
	bs, n := uint64(b.BlockSize()), b.NumBlocks()
	if bytes <= (n-1)*bs || bytes > n*bs {
		return errors.Errorf("compute bdev %s: %s has %d blocks of %d bytes: its data cannot end at byte %d", cb.name, b.Name(), n, bs, bytes)
	}
	if cb.tails == nil {
		cb.tails = make([]uint64, len(cb.bases))
	}
	cb.tails[base] = bytes - (n-1)*bs
	if cb.tails[base] == bs {
		cb.tails[base] = 0
	}
	return nil
}

// tail returns the bytes of base's last block if it is partial, else 0.
func (cb *Bdev) tail(base int) uint64 {
	if cb.tails == nil {
		return 0
	}
	return cb.tails[base]
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

// Placement selects where programs run: on a compute device or on host
// cores. (How host cores run them, JIT or interpreter, is the engine:
// compute/engine.Engine.)
type Placement int

// Placements.
const (
	// PlaceAuto offloads a target to a compute-capable controller that can
	// reach its data and runs it on host cores otherwise.
	PlaceAuto Placement = iota
	// PlaceDevice requires offload; a target no compute device reaches fails.
	PlaceDevice
	// PlaceHost runs every target on host compute cores.
	PlaceHost
)

// ParsePlacement parses "auto", "device" or "host".
func ParsePlacement(s string) (Placement, error) {
	switch s {
	case "auto":
		return PlaceAuto, nil
	case "device":
		return PlaceDevice, nil
	case "host":
		return PlaceHost, nil
	}
	return 0, errors.Errorf("unknown placement %q (want auto, device or host)", s)
}

// Options tune Scan.
type Options struct {
	// Placement is where each target's program runs (PlaceAuto).
	Placement Placement
	// ChunkBytes is the size of one program run's data (rounded down to the
	// base's block size, at least one block); 0 means 256 KiB. It is also
	// the unit in which reactors take work from a target: every reactor
	// takes the next chunk of a target from its shared cursor, so that one
	// large target keeps every reactor busy and none idles while any
	// target has chunks left.
	ChunkBytes int
	// InFlight is the number of chunks in flight per reactor (per
	// reactor and compute device for offloaded targets); 0 means 4.
	InFlight int
	// EmitCap is the most values one chunk's run may emit; 0 means one per
	// 4 bytes of the chunk, at least 4096. Emit buffers start at one value
	// per block (at least 1024) and grow: a run whose buffer filled is run
	// again with room for everything it emitted, when that repeats nothing
	// but its emits (the program has no writable maps). Values past EmitCap,
	// or of a run that cannot be repeated, are counted in Stats.Losses.
	EmitCap int
	// Overlap is how many bytes past its own data every run sees (at most
	// MaxOverlap): a per-block filter's data_end lies Overlap bytes past its
	// block's end, a scanner's past its chunk's, where the namespace has
	// them. A pattern that straddles a block boundary is then found at the
	// block where it starts; a scanner's emits that fall in the overlap
	// belong to the next chunk and are left to it. Overlapping runs use
	// host engines.
	Overlap int
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

// MaxOverlap is the largest Options.Overlap.
const MaxOverlap = 1 << 20

// Loss is a program run whose emitted values did not all reach the host:
// more than Options.EmitCap, or more than a device's output range holds of a
// program that cannot be run again (it has writable maps).
type Loss struct {
	Target int
	Base   string
	LBA    uint64 // first block of the run
	Blocks uint64
	Values uint64 // values emitted that did not reach the host
	Where  string // "host" or the compute device's name
}

func (l Loss) String() string {
	return fmt.Sprintf("%s blocks %d-%d on %s: %d emitted values lost", l.Base, l.LBA, l.LBA+l.Blocks-1, l.Where, l.Values)
}

// CPUReadCharger is a Staging whose memory costs the CPU more to read than
// DRAM and that charges it (an emulated device BAR: uncached reads). Host
// engines call ChargeCPURead with the bytes a program run is given, on the
// core that runs it, and count the time as the run's.
type CPUReadCharger interface {
	ChargeCPURead(n int)
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

// CoreStats is what one host reactor did in a scan: the chunks it ran on
// host engines and the offloaded chunks it drove.
type CoreStats struct {
	Core         int
	Chunks       uint64 // chunks completed (program runs or offloaded runs)
	BytesScanned uint64
}

// TargetStats is what a scan did on one target.
type TargetStats struct {
	Base      string
	NSID      uint32
	BlockSize uint32
	// Engine is where the target ran: "host" or the compute device's name.
	Engine string
	// Why says, when a target that PlaceAuto could have offloaded ran on
	// the host, what kept it there.
	Why    string
	Blocks uint64
	// Bytes is the target's data: Blocks whole blocks, less what a partial
	// last block (the tail of a file) lacks.
	Bytes        uint64
	BytesScanned uint64
	// Matches is the values delivered (matching LBAs of a per-block
	// filter, one per emit of a scanner); MatchingBlocks the distinct
	// blocks they fall in.
	Matches        uint64
	MatchingBlocks uint64
	// Lost is the emitted values that did not reach the host (see Losses).
	Lost uint64
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
	// Engine is the engine host cores ran the program with ("jit" or
	// "interpreter"); compute devices run their own.
	Engine string
	// Overflows counts runs whose emit buffer filled; Reruns those of them
	// that were run again with room for every value.
	Overflows, Reruns uint64
	// Lost is the emitted values that did not reach the host, and Losses
	// says where. A scan with losses is incomplete.
	Lost    uint64
	Losses  []Loss
	Engines []EngineStats
	Targets []TargetStats
	// Cores is what each host reactor of the scan did, in the order of
	// the group's reactors.
	Cores  []CoreStats
	Faults []ChunkFault
	// Maps are the program's maps merged over every instance.
	Maps []engine.MapData
}

// Scan runs exe over targets and streams matches to opts.OnMatch. It returns
// when every target is done, or, after ctx ends, when the chunks in flight
// are; then the error is ctx's. Faulty chunks are reported in Stats.Faults
// and do not stop the scan.
//
// Per target the placement is chosen by opts.Placement: PlaceAuto offloads to a
// compute-capable controller of opts.Devices that reaches the target's data
// and scans on host cores otherwise, PlaceDevice fails unless every target
// can be offloaded, PlaceHost never offloads.
//
// Host targets are scanned by one worker per reactor of g. Each target has a
// cursor that hands out its chunks (opts.ChunkBytes) with one atomic add per
// chunk; a worker takes chunks from one target until it has none left, then
// moves on to the next target that has, so one large namespace spreads over
// every reactor and many small ones do too. The cursors are the only thing
// workers write in common: instances, counters and matches are per worker,
// merged when the scan ends.
//
// A scan that fails to start, or ends, stops its workers before it frees
// anything: chunks in flight complete (or time out in the driver) first, and
// every queue pair it opened is closed. An error closing one is returned.
func (cb *Bdev) Scan(ctx context.Context, g *poller.Group, exe *engine.Executable, targets []Target, opts Options) (_ *Stats, err error) {
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
	if len(reactors) == 0 {
		return nil, errors.Errorf("compute bdev %s: the poller group has no reactors", cb.name)
	}
	if opts.Overlap < 0 || opts.Overlap > MaxOverlap {
		return nil, errors.Errorf("compute bdev %s: overlap %d is outside 0-%d bytes", cb.name, opts.Overlap, MaxOverlap)
	}
	if opts.EmitCap < 0 {
		return nil, errors.Errorf("compute bdev %s: emit cap %d is negative", cb.name, opts.EmitCap)
	}
	st := &Stats{Engines: []EngineStats{{Name: "host"}}, Engine: exe.Engine()}
	var devs []*offDevice
	// noDevice says why targets that auto would offload run on the host.
	noDevice := "no compute-capable controller among the devices"
	if opts.Placement != PlaceHost && len(opts.Devices) > 0 {
		img, err := image.Encode(exe.Program())
		if err != nil {
			return nil, errors.Wrapf(err, "compute bdev %s", cb.name)
		}
		if devs, err = openOffload(opts.Devices, img); err != nil {
			if opts.Placement == PlaceDevice {
				return nil, errors.Wrapf(err, "compute bdev %s", cb.name)
			}
			// auto: a device that refuses the program leaves the work to the host
			devs, noDevice = nil, "the compute device refused the program: "+err.Error()
		}
		defer func() {
			if cerr := closeOffload(devs); cerr != nil && err == nil {
				err = errors.Wrapf(cerr, "compute bdev %s", cb.name)
			}
		}()
	}
	var jobs []job
	var hosts []*hostTarget
	// fail tears down what was built so far and returns err with any error
	// of the teardown.
	fail := func(err error) (*Stats, error) {
		return nil, andThen(err, teardownJobs(jobs))
	}
	var total uint64
	// Where each target goes: the compute devices that share it
	// (offloaded), or none (the host).
	placed := make([][]*offDevice, len(targets))
	curs := make([]*cursor, len(targets))
	for ti, t := range targets {
		if t.Base < 0 || t.Base >= len(cb.bases) {
			return fail(errors.Errorf("compute bdev %s: target %d names base %d of %d", cb.name, ti, t.Base, len(cb.bases)))
		}
		b := cb.bases[t.Base]
		n := t.Blocks
		if n == 0 {
			n = b.NumBlocks() - min(t.Start, b.NumBlocks())
		}
		if t.Start >= b.NumBlocks() || n > b.NumBlocks()-t.Start {
			return fail(errors.Errorf("compute bdev %s: target %d, blocks %d+%d, runs past the end of %s (%d blocks)", cb.name, ti, t.Start, n, b.Name(), b.NumBlocks()))
		}
		bs := uint64(b.BlockSize())
		tail := cb.tail(t.Base)
		bytes := n * bs
		if tail != 0 && t.Start+n == b.NumBlocks() {
			bytes -= bs - tail
		}
		total += bytes
		// (A chunk is never larger than its target: buffers and device
		// memory are sized by chunks.)
		chunkBlocks := min(max(uint64(opts.ChunkBytes)/bs, 1), n)
		curs[ti] = newCursor(t.Start, t.Start+n, chunkBlocks)
		ts := TargetStats{Base: b.Name(), NSID: b.Info().NSID, BlockSize: uint32(bs), Engine: "host", Blocks: n, Bytes: bytes}
		var why string
		switch {
		case opts.Placement == PlaceHost:
		case len(devs) == 0:
			why = noDevice
		case opts.Overlap > 0:
			why = "an overlap past block ends runs on host engines"
		case tail != 0 && t.Start+n == b.NumBlocks():
			why = fmt.Sprintf("its last block is partial (%d of %d bytes); offload runs whole blocks", tail, bs)
		default:
			var w string
			if placed[ti], w = cb.offloadFor(devs, b, opts.Placement); len(placed[ti]) == 0 {
				why = "no compute device reaches its namespace: " + w
			}
		}
		if len(placed[ti]) == 0 && why == "" && opts.Placement != PlaceHost {
			why = "no compute device reaches its namespace"
		}
		if len(placed[ti]) == 0 && opts.Placement == PlaceDevice {
			return fail(errors.Errorf("compute bdev %s: target %d (%s): no compute-capable controller can reach its data (%s; offload needs a controller with the Computational Programs and Subsystem Local Memory command sets that can copy from the namespace)", cb.name, ti, b.Name(), why))
		}
		ts.Why = why
		st.Targets = append(st.Targets, ts)
	}
	// Offloaded targets: per compute device, one job per reactor (as many
	// as the chunks keep busy) that takes chunks from any of the device's
	// targets, so the device memory and range sets a scan takes do not
	// grow with the number of targets. A target that several devices reach
	// is shared by all of them: their jobs take chunks from its one cursor.
	// A job keeps twice the host's chunks in flight (a chunk waits for three
	// commands in turn), or fewer when its share of the chunks is smaller:
	// each chunk slot costs the device memory and two admin commands (a
	// range set made and deleted), which would outweigh a small scan.
	for k, d := range devs {
		var mine []int
		var chunks uint64 // the device's share
		for ti := range targets {
			if slices.Contains(placed[ti], d) {
				mine = append(mine, ti)
				n := (st.Targets[ti].Blocks + curs[ti].per - 1) / curs[ti].per
				chunks += (n + uint64(len(placed[ti])) - 1) / uint64(len(placed[ti]))
			}
		}
		if len(mine) == 0 {
			continue
		}
		parts := int(min(uint64(len(reactors)), max(chunks/uint64(opts.InFlight), 1)))
		slots := int(min(uint64(2*opts.InFlight), (chunks+uint64(parts)-1)/uint64(parts)))
		var planned []job
		var err error
		for p := 0; p < parts; p++ {
			var j *offJob
			// Devices start on different reactors, so that two devices
			// with one job each are driven from two cores.
			j, err = newOffJob(reactors[(p+k)%len(reactors)], d, cb.bases, targets, mine, curs, exe, slots, opts)
			if err != nil {
				if p > 0 && errors.Is(err, errNoDeviceMemory) {
					err = nil // fewer jobs: the device is full
				}
				break
			}
			planned = append(planned, j)
		}
		if err != nil && errors.Is(err, errNoDeviceMemory) && (opts.Placement == PlaceAuto || sharedByOthers(placed, mine, d)) {
			// The device is full: its targets go to the other devices
			// that reach them, or to host cores.
			if terr := teardownJobs(planned); terr != nil {
				jobs = append(jobs, planned...)
				return fail(terr)
			}
			for _, ti := range mine {
				placed[ti] = slices.DeleteFunc(placed[ti], func(o *offDevice) bool { return o == d })
				if len(placed[ti]) == 0 {
					st.Targets[ti].Why = "the memory of " + d.c.Name() + " is taken (memory range sets or subsystem local memory)"
				}
			}
			continue
		}
		jobs = append(jobs, planned...)
		if err != nil {
			return fail(errors.Wrapf(err, "compute bdev %s: offload to %s", cb.name, d.c.Name()))
		}
		d.stats = len(st.Engines)
		st.Engines = append(st.Engines, EngineStats{Name: d.c.Name(), Targets: len(mine)})
	}
	for ti, t := range targets {
		if len(placed[ti]) > 0 {
			names := make([]string, len(placed[ti]))
			for k, d := range placed[ti] {
				names[k] = d.c.Name()
			}
			st.Targets[ti].Engine, st.Targets[ti].Why = strings.Join(names, "+"), ""
			continue
		}
		b := cb.bases[t.Base]
		st.Engines[0].Targets++
		hosts = append(hosts, &hostTarget{loopTarget: loopTarget{cur: curs[ti], index: ti, bs: uint64(b.BlockSize()), nsid: b.Info().NSID, name: b.Name()},
			base: t.Base, nsBlocks: b.NumBlocks(), tail: cb.tail(t.Base)})
	}
	if len(hosts) > 0 {
		// Every host worker runs its own instance: their maps must fit the
		// program's map memory limit together.
		if err := exe.Program().CheckInstances(len(reactors)); err != nil {
			return fail(err)
		}
		ws, err := newHostWorkers(reactors, cb.descs, hosts, exe, opts)
		for _, w := range ws {
			// A cancelled scan stops its programs wherever they are; they
			// watch ctx themselves, since the goroutine that would tell
			// them waits for a core while programs occupy every core.
			w.inst.SetContext(ctx)
			jobs = append(jobs, w)
		}
		if err != nil {
			return fail(errors.Wrapf(err, "compute bdev %s", cb.name))
		}
	}
	// The jobs wake the collector when a ring fills and when they finish;
	// otherwise it looks at the rings at a pace that eases off while they
	// stay empty. (Waking it per chunk would cost the reactors a channel
	// operation per chunk; polling them flat out would take a core.)
	wake := make(chan struct{}, 1)
	for _, j := range jobs {
		j.base().wake = wake
	}
	start := time.Now()
	// A scan whose context is already done still starts (and so shows the
	// same teardown as one cancelled later), but its jobs stop after the
	// reads they issue at start.
	preCancelled := ctx.Err() != nil
	for _, j := range jobs {
		if preCancelled {
			j.base().cancel.Store(true)
		}
		if err := j.start(); err != nil {
			return fail(errors.Wrapf(err, "compute bdev %s", cb.name))
		}
	}
	for _, j := range jobs {
		if err := j.launch(); err != nil {
			return fail(errors.Wrapf(err, "compute bdev %s", cb.name))
		}
	}
	// Drain matches until every job is done.
	tick := time.NewTicker(opts.ProgressEvery)
	defer tick.Stop()
	pause := time.NewTimer(time.Hour)
	defer pause.Stop()
	progress := func() {
		if opts.Progress != nil {
			var done uint64
			for _, j := range jobs {
				done += j.base().pubScanned.Load()
			}
			opts.Progress(done, total)
		}
	}
	// Each wake-up of the collector takes a core from a reactor whose
	// thread is locked, which costs a hand-off both ways: a ring that
	// fills and a job that ends wake it at once, so the pause can be long.
	const minPause, maxPause = 20 * time.Microsecond, 4 * time.Millisecond
	wait := minPause
	ctxDone := ctx.Done()
	var buf [256]Match
	remaining := len(jobs)
	cancelled := false
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
			cancelled, ctxDone = true, nil
			for _, j := range jobs {
				j.base().cancel.Store(true)
			}
		}
		if got > 0 || remaining == 0 {
			wait = minPause
			select {
			case <-tick.C:
				progress()
			default:
			}
			continue
		}
		pause.Reset(wait)
		select {
		case <-wake:
		case <-pause.C:
			wait = min(2*wait, maxPause)
		case <-tick.C:
			progress()
		case <-ctxDone:
		}
		pause.Stop()
	}
	st.Elapsed = time.Since(start)
	var insts []*engine.Instance
	var hostBytes, deviceToHost, fetched uint64
	cores := make(map[*poller.Reactor]*CoreStats, len(reactors))
	for _, r := range reactors {
		st.Cores = append(st.Cores, CoreStats{Core: r.Core()})
	}
	for i, r := range reactors {
		cores[r] = &st.Cores[i]
	}
	for _, jj := range jobs {
		j := jj.base()
		st.Overflows += j.overflows
		st.Faults = append(st.Faults, j.faults...)
		es := &st.Engines[0]
		l := jj.loop()
		for k, t := range l.targets {
			st.Targets[t.index].BytesScanned += l.perTarget[k]
			st.Targets[t.index].MatchingBlocks += l.perBlocks[k]
		}
		switch x := jj.(type) {
		case *hostWorker:
			hostBytes += j.scanned
			insts = append(insts, x.inst)
		case *offJob:
			es = &st.Engines[x.dev.stats]
			deviceToHost += x.toHost
			fetched += x.fetched
		}
		st.Reruns += l.reruns
		for _, l := range l.losses {
			st.Losses = append(st.Losses, l)
			st.Lost += l.Values
			st.Targets[l.Target].Lost += l.Values
		}
		st.BytesScanned += j.scanned
		es.Chunks += j.chunkCount
		es.BytesScanned += j.scanned
		es.RunTime += time.Duration(j.runNS)
		if cs := cores[j.r]; cs != nil {
			cs.Chunks += j.chunkCount
			cs.BytesScanned += j.scanned
		}
	}
	stopErr := teardownJobs(jobs)
	// Host engines bring every byte to the host CPU (staged in a peer's CMB
	// it never touches host DRAM); offloaded targets deliver only their
	// match lists and the program's maps.
	// (Offloaded chunks whose match lists overflowed were fetched to host
	// memory to be run again there.)
	st.BytesToHost = hostBytes + deviceToHost
	st.BytesThroughHost = fetched
	if opts.Staging == nil || opts.Staging.ThroughHost() {
		st.BytesThroughHost += hostBytes
	}
	sort.Slice(st.Losses, func(a, b int) bool {
		la, lb := st.Losses[a], st.Losses[b]
		return la.Target < lb.Target || la.Target == lb.Target && la.LBA < lb.LBA
	})
	st.Maps = engine.MergeMaps(insts...)
	if len(insts) == 0 {
		st.Maps = nil
	}
	var stateErr error
	for _, d := range devs {
		if d.stats == 0 || !hasWritableMaps(exe.Program()) {
			continue
		}
		maps, moved, err := d.state(exe.Program())
		st.BytesToHost += moved
		if err != nil {
			stateErr = err
			continue
		}
		st.Maps = engine.MergeMapData(st.Maps, maps)
	}
	switch {
	case cancelled:
		return st, ctx.Err()
	case stopErr != nil:
		return st, errors.Wrapf(stopErr, "compute bdev %s", cb.name)
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

// offloadFor returns the compute devices that take target base b (every
// one that reaches its data), or none and why.
func (cb *Bdev) offloadFor(devs []*offDevice, b *bdev.Bdev, kind Placement) ([]*offDevice, string) {
	if kind == PlaceHost {
		return nil, ""
	}
	if len(devs) == 0 {
		return nil, "no controller with the Computational Programs and Subsystem Local Memory command sets took the program"
	}
	c, _ := bdev.NVMeNamespace(b)
	if c == nil {
		return nil, "not an NVMe namespace"
	}
	var out []*offDevice
	var why []string
	for _, d := range devs {
		if ok, w := d.reaches(c); ok {
			out = append(out, d)
		} else {
			why = append(why, w)
		}
	}
	return out, strings.Join(why, "; ")
}

// sharedByOthers reports whether every one of the targets is also placed on
// a device other than d.
func sharedByOthers(placed [][]*offDevice, targets []int, d *offDevice) bool {
	for _, ti := range targets {
		if !slices.ContainsFunc(placed[ti], func(o *offDevice) bool { return o != d }) {
			return false
		}
	}
	return true
}

// cursor hands out the chunks of one target to every reactor that scans it:
// one atomic add per chunk, on a cache line of its own.
type cursor struct {
	_    [64]byte
	next atomic.Uint64 // first block not handed out yet (may run past end)
	_    [56]byte
	end  uint64 // first block after the target
	per  uint64 // blocks per chunk
}

func newCursor(start, end, per uint64) *cursor {
	c := &cursor{end: end, per: per}
	c.next.Store(start)
	return c
}

// take returns the next chunk, or false once the target is handed out.
func (c *cursor) take() (lba, blocks uint64, ok bool) {
	if c.next.Load() >= c.end {
		return 0, 0, false // handed out: no more writes to the line
	}
	lba = c.next.Add(c.per) - c.per
	if lba >= c.end {
		return 0, 0, false
	}
	return lba, min(c.per, c.end-lba), true
}

// rest hands out everything the cursor has left, as one range.
func (c *cursor) rest() (lba, blocks uint64, ok bool) {
	for {
		lba = c.next.Load()
		if lba >= c.end {
			return 0, 0, false
		}
		if c.next.CompareAndSwap(lba, c.end) {
			return lba, c.end - lba, true
		}
	}
}

// laterError is an error followed by another one that happened while
// cleaning up after it; it unwraps to the first.
type laterError struct{ first, later error }

func (e *laterError) Error() string { return e.first.Error() + "; then: " + e.later.Error() }
func (e *laterError) Unwrap() error { return e.first }

// andThen returns err with later, an error of the cleanup after it, added.
func andThen(err, later error) error {
	if later == nil {
		return err
	}
	return &laterError{err, later}
}

// teardownJobs tears every job down and returns the first error.
func teardownJobs(jobs []job) error {
	var first error
	for _, j := range jobs {
		if err := j.teardown(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// hostTarget is a target scanned by host workers.
type hostTarget struct {
	loopTarget
	base     int    // index into Bases
	dom      int    // buffer domain: index into hostWorker.domains
	nsBlocks uint64 // blocks of the base
	tail     uint64 // bytes of the base's last block if it is partial, else 0
}

// extent returns the blocks to read for a chunk of n blocks at lba (its own
// and those the overlap reaches into), the bytes of its own data and the
// bytes a run sees (its own and the overlap's).
func (t *hostTarget) extent(lba, n uint64, overlap uint64) (read, own, seen uint64) {
	extra := min((overlap+t.bs-1)/t.bs, t.nsBlocks-(lba+n))
	read = n + extra
	own, seen = n*t.bs, read*t.bs
	if t.tail != 0 && lba+read == t.nsBlocks {
		seen -= t.bs - t.tail
		if extra == 0 {
			own = seen
		}
	}
	return read, own, min(seen, own+overlap)
}

// hostWorker scans host targets on one reactor: its scanLoop takes the
// chunks, the worker reads them through bdev channels and runs the program
// on them. Everything but the published fields of jobBase and the targets'
// cursors is the reactor's.
type hostWorker struct {
	_ [64]byte // nothing of another worker's on this one's cache lines
	scanLoop
	hts     []*hostTarget // the loop's targets; shared, read-only but for the cursors
	descs   []*bdev.Desc  // by base
	chans   []*bdev.Channel
	staging Staging
	charge  CPUReadCharger // staging's, if it charges CPU reads
	domains []bufDomain
	inst    *engine.Instance
	chunks  []chunk
	overlap uint64
	_       [64]byte
}

// emits is how a job sizes emit buffers and what it lost.
type emits struct {
	// bound is the most values a run may emit (Options.EmitCap).
	bound int
	// rerun: a run may be repeated (the program has no writable maps), so
	// a full buffer grows and the run is repeated.
	rerun  bool
	reruns uint64
	losses []Loss
}

// bufDomain is a set of bases whose controllers reach the same memory; each
// chunk of a worker has one buffer per domain.
type bufDomain struct {
	key  any
	base int // a base of the domain: chunk buffers are allocated for it
	size int // largest chunk of its targets, in bytes
}

type chunk struct {
	slot
	w    *hostWorker
	bufs []bdev.Buffer // by domain
	t    *hostTarget
	emit []uint64 // the run's emit buffer
}

// domainKey says which bases can share chunk buffers: those of one NVMe
// controller (its DMA memory, or its view of a staging CMB); any other bdev
// has its own.
func domainKey(b *bdev.Bdev) any {
	if c, _ := bdev.NVMeNamespace(b); c != nil {
		return c
	}
	return b
}

// emitSizes returns the first size of a run's emit buffer and its bound, for
// chunks of at most per blocks and bytes bytes.
func emitSizes(p *engine.Program, per, bytes uint64, capOpt int) (first, bound int) {
	bound = capOpt
	if bound <= 0 {
		bound = int(max(bytes/4, 4096))
	}
	bound = max(bound, int(per)) // a filter emits one per block at most
	first = min(bound, int(max(per, 1024)))
	if hasWritableMaps(p) && callsEmit(p) {
		// A run that updates maps cannot be repeated: room for all at once.
		first = bound
	}
	return first, bound
}

// callsEmit reports whether p calls bpfblk_emit.
func callsEmit(p *engine.Program) bool {
	for _, ins := range p.Insns {
		if ins.IsBuiltinCall() && ins.Constant == abi.HelperEmit {
			return true
		}
	}
	return false
}

// newHostWorkers makes one worker per reactor over the host targets; on
// error it returns the workers made so far (to tear down).
func newHostWorkers(reactors []*poller.Reactor, descs []*bdev.Desc, targets []*hostTarget, exe *engine.Executable, opts Options) ([]*hostWorker, error) {
	var domains []bufDomain
	maxPer, maxBytes := uint64(1), uint64(0)
	overlap := uint64(opts.Overlap)
	for _, t := range targets {
		b := descs[t.base].Bdev()
		key := domainKey(b)
		t.dom = -1
		for i := range domains {
			if domains[i].key == key {
				t.dom = i
			}
		}
		if t.dom < 0 {
			t.dom = len(domains)
			domains = append(domains, bufDomain{key: key, base: t.base})
		}
		size := int((t.cur.per + (overlap+t.bs-1)/t.bs) * t.bs)
		domains[t.dom].size = max(domains[t.dom].size, size)
		maxPer = max(maxPer, t.cur.per)
		maxBytes = max(maxBytes, t.cur.per*t.bs)
	}
	first, bound := emitSizes(exe.Program(), maxPer, maxBytes, opts.EmitCap)
	lts := make([]*loopTarget, len(targets))
	for i, t := range targets {
		lts[i] = &t.loopTarget
	}
	var ws []*hostWorker
	for i, r := range reactors {
		w := &hostWorker{hts: targets, descs: descs, chans: make([]*bdev.Channel, len(descs)),
			staging: opts.Staging, domains: domains, overlap: overlap, inst: exe.NewInstance()}
		var err error
		if w.scanLoop, err = newScanLoop(r, "scan", w, exe.Program().Type, lts); err != nil {
			return ws, err
		}
		w.emits = emits{bound: bound, rerun: !hasWritableMaps(exe.Program())}
		// Spread the workers' first targets over the targets.
		w.cur = i * len(targets) / len(reactors)
		w.charge, _ = opts.Staging.(CPUReadCharger)
		ws = append(ws, w)
		w.chunks = make([]chunk, opts.InFlight)
		slots := make([]*slot, len(w.chunks))
		for k := range w.chunks {
			c := &w.chunks[k]
			*c = chunk{slot: slot{i: k, seen: make([]uint64, (maxPer+63)/64)}, w: w, bufs: make([]bdev.Buffer, len(domains)), emit: make([]uint64, first)}
			slots[k] = &c.slot
			for d, dom := range domains {
				if c.bufs[d], err = w.alloc(dom); err != nil {
					return ws, err
				}
			}
		}
		w.setSlots(slots)
	}
	return ws, nil
}

func (w *hostWorker) alloc(dom bufDomain) (bdev.Buffer, error) {
	d := w.descs[dom.base]
	if w.staging != nil {
		buf, err := w.staging.Alloc(d.Bdev(), dom.size)
		return buf, errors.Wrapf(err, "compute: stage %s in %s", d.Bdev().Name(), w.staging.Name())
	}
	buf, err := d.AllocBuffer(dom.size)
	return buf, errors.Wrapf(err, "compute: chunk buffer for %s", d.Bdev().Name())
}

// free releases the chunk buffers; only once nothing is in flight.
func (w *hostWorker) free() error {
	var first error
	for k := range w.chunks {
		for d, buf := range w.chunks[k].bufs {
			if buf.Bytes == nil {
				continue
			}
			base := w.descs[w.domains[d].base]
			var err error
			if w.staging != nil {
				err = w.staging.Free(base.Bdev(), buf)
			} else {
				err = base.FreeBuffer(buf)
			}
			if err != nil && first == nil {
				first = errors.Wrapf(err, "compute: free a chunk buffer of %s", base.Bdev().Name())
			}
		}
	}
	w.chunks = nil
	return first
}

// closeQueues closes the worker's channels; on the reactor.
func (w *hostWorker) closeQueues() error {
	var first error
	for i, ch := range w.chans {
		if ch == nil {
			continue
		}
		if err := ch.Close(); err != nil {
			if first == nil {
				first = errors.Wrapf(err, "compute: close the channel of %s on core %d", w.descs[i].Bdev().Name(), w.r.Core())
			}
			continue // in flight still: kept, and so are the buffers
		}
		w.chans[i] = nil
	}
	return first
}

// openQueues opens a channel to every base of the worker's targets.
func (w *hostWorker) openQueues() error {
	for _, t := range w.hts {
		if w.chans[t.base] != nil {
			continue
		}
		ch, err := w.descs[t.base].NewChannelOn(w.r, len(w.chunks))
		if err != nil {
			return andThen(err, w.closeQueues())
		}
		w.chans[t.base] = ch
	}
	return nil
}

// submit reads chunk s (and the blocks its overlap reaches into).
func (w *hostWorker) submit(s *slot) error {
	c := &w.chunks[s.i]
	c.t = w.hts[s.tk]
	read, _, _ := c.t.extent(s.lba, s.blocks, w.overlap)
	return w.chans[c.t.base].Read(&c.bufs[c.t.dom], s.lba, read, onChunkRead, c)
}

func (w *hostWorker) refusal() (chunk, rest string) { return "read", "not read" }

// reap polls the channels that have reads in flight.
func (w *hostWorker) reap() int {
	n := 0
	for _, ch := range w.chans {
		if ch != nil && ch.Outstanding() > 0 {
			n += ch.Poll()
		}
	}
	return n
}

func onChunkRead(io *bdev.IO) {
	c := io.Arg.(*chunk)
	w := c.w
	if err := io.Err(); err != nil {
		w.fault(&c.slot, errors.Wrap(err, "read"))
	} else {
		w.run(c)
	}
	w.done(&c.slot)
}

// run runs the program on a chunk and keeps its values in c.vals.
func (w *hostWorker) run(c *chunk) {
	t := c.t
	_, own, seen := t.extent(c.lba, c.blocks, w.overlap)
	ctx := engine.Context{Data: c.bufs[t.dom].Bytes[:seen], LBA: c.lba, NSID: t.nsid, BlockSize: uint32(t.bs), BlockCount: uint32(c.blocks), Overlap: uint32(w.overlap)}
	w.counted(&c.slot, own)
	for {
		t0 := time.Now()
		if w.charge != nil {
			w.charge.ChargeCPURead(int(seen))
		}
		res, err := w.inst.Run(&ctx, c.emit)
		w.runNS += int64(time.Since(t0))
		if err != nil {
			w.fault(&c.slot, errors.Wrap(err, "program"))
			return
		}
		if res.Dropped > 0 {
			w.overflows++
			if want := res.Emitted + res.Dropped; w.rerun && len(c.emit) < w.bound {
				// Run again with room for every value (allocated once per
				// chunk slot and kept: growth is rare and bounded).
				c.emit = make([]uint64, min(w.bound, want))
				w.reruns++
				continue
			}
			w.losses = append(w.losses, Loss{Target: t.index, Base: t.name, LBA: c.lba, Blocks: c.blocks, Values: uint64(res.Dropped), Where: "host"})
		}
		c.vals = c.emit[:res.Emitted]
		break
	}
	if err := w.check(c, own, seen); err != nil {
		c.vals = c.vals[:0]
		w.fault(&c.slot, err)
		return
	}
	w.matched(&c.slot, c.vals)
}

// check validates the values of a run over a chunk with own bytes of its
// own and seen in all, and drops a scanner's values in the overlap: they
// belong to the next chunk, which finds them itself.
func (w *hostWorker) check(c *chunk, own, seen uint64) error {
	k := 0
	for _, v := range c.vals {
		switch {
		case w.typ == abi.TypeFilter:
			if v < c.lba || v >= c.lba+c.blocks {
				return errors.Errorf("program emitted LBA %d outside its chunk", v)
			}
		case v >= seen:
			return errors.Errorf("program emitted offset %d outside its %d-byte chunk", v, seen)
		case v >= own:
			continue
		}
		c.vals[k] = v
		k++
	}
	c.vals = c.vals[:k]
	return nil
}

// countBlocks returns the distinct blocks of a chunk that vals fall in; seen
// is a zeroed bitmap of the chunk's blocks, left zeroed.
func countBlocks(typ abi.Type, vals []uint64, bs uint64, seen []uint64) uint64 {
	if typ == abi.TypeFilter {
		return uint64(len(vals)) // one LBA per matching block
	}
	n := uint64(0)
	for _, v := range vals {
		b := v / bs
		if seen[b/64]&(1<<(b%64)) == 0 {
			seen[b/64] |= 1 << (b % 64)
			n++
		}
	}
	for _, v := range vals {
		seen[v/bs/64] = 0
	}
	return n
}

// inFlight is the number of reads in flight on all the worker's channels.
func (w *hostWorker) inFlight() int {
	n := 0
	for _, ch := range w.chans {
		if ch != nil {
			n += ch.Outstanding()
		}
	}
	return n
}
