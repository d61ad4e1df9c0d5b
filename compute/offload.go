package compute

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/pkg/errors"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/compute/abi"
	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/compute/internal/image"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/poller"
)

// Offload to a computational storage controller. A controller qualifies
// because Identify says so (nvme.Controller.ComputeNamespaces: the CP and SLM
// command sets); a target is offloaded to it when the device reaches the
// data, which Identify Controller says too: the target's namespace is the
// device's own or belongs to a controller of the device's NVM subsystem
// (same SUBNQN, CMIC multi-controller), whose blocks the device reads peer
// to peer. A target that several devices reach is shared by all of them:
// each takes chunks from the target's cursor. Per chunk the host submits
//
//	Memory Copy (LBAs of the data namespace -> SLM data range)
//	Execute Program (range set: data range, output range)
//	Memory Read (ExecResult header + emitted values -> host)
//
// so only the match list crosses to the host (nvme/compute.go defines the
// convention). Several chunks are in flight per job; each has its own SLM
// ranges and memory range set.

// offloadTimeout bounds every synchronous device command of the setup.
const offloadTimeout = 10 * time.Second

// firstRead is how many emitted values the first Memory Read fetches with
// the result header; more take a second read.
const firstRead = 14

// minTransfer is the smallest largest transfer (nvme.Controller.MaxTransfer)
// a compute device must allow: the first Memory Read of a match list, the
// result header and firstRead values, in one command.
const minTransfer = nvme.ExecResultSize + 8*firstRead

// offDevice is one compute controller prepared for a scan: the program loaded
// and active, its memory taken from the process-wide pool of the namespace.
type offDevice struct {
	c     *nvme.Controller
	cn    nvme.ComputeNamespace
	slm   *nvme.Namespace
	size  uint64
	pool  *slmPool
	held  []span // SLM this scan holds, returned by closeOffload
	slot  int    // program slot, -1 until loaded
	rsids []uint16
	stats int // index in Stats.Engines
}

// syncCommand submits one command on qp and waits for it.
func syncCommand(qp *nvme.QueuePair, submit func(nvme.Completer) error) (uint64, error) {
	var done bool
	var res uint64
	var cerr error
	cb := nvme.CompleterFunc(func(_ uint64, r uint64, err error) { done, res, cerr = true, r, err })
	if err := submit(cb); err != nil {
		return 0, err
	}
	deadline := time.Now().Add(offloadTimeout)
	for !done {
		if qp.Process(0) == 0 {
			if time.Now().After(deadline) {
				return 0, errors.New("compute: device command timed out")
			}
			time.Sleep(10 * time.Microsecond)
		}
	}
	return res, cerr
}

// openOffload prepares every compute-capable controller of devs.
func openOffload(devs []*nvme.Controller, img []byte) ([]*offDevice, error) {
	var out []*offDevice
	for _, c := range devs {
		cns, err := c.ComputeNamespaces()
		if err != nil {
			closeOffload(out)
			return nil, err
		}
		if len(cns) == 0 || len(cns[0].Memory) == 0 {
			continue
		}
		d := &offDevice{c: c, cn: cns[0], slm: cns[0].Memory[0], size: cns[0].Sizes[0], slot: -1}
		d.pool = poolFor(c, d.slm, d.size)
		if uint64(len(img)) > uint64(d.cn.Info.MaxProgram) || d.cn.Info.ProgTypes&1 == 0 {
			continue
		}
		if mt := c.MaxTransfer(); mt < minTransfer {
			closeOffload(out)
			return nil, errors.Errorf("compute: %s moves at most %d bytes per command; reading back a match list takes %d", c.Name(), mt, minTransfer)
		}
		// Loading and activating are two commands, so two scans of this
		// process could otherwise pick the same free slot in between.
		slotMu.Lock()
		var lerr error
		for s := 0; s < int(d.cn.Info.Slots); s++ {
			if lerr = c.LoadProgram(d.cn.CP, uint16(s), nvme.ProgTypeEBPF, img, 0); lerr == nil {
				d.slot = s
				break
			}
			if !errors.Is(lerr, nvme.ErrProgramActive) {
				break
			}
		}
		if d.slot < 0 {
			slotMu.Unlock()
			closeOffload(out)
			return nil, errors.Wrapf(lerr, "compute: load the program into %s", c.Name())
		}
		err = c.ActivateProgram(d.cn.CP, uint16(d.slot))
		if err != nil {
			c.UnloadProgram(d.cn.CP, uint16(d.slot))
		}
		slotMu.Unlock()
		if err != nil {
			closeOffload(out)
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// slotMu serialises program-slot claims (Load Program then Activate) of
// this process; it is taken at scan setup only.
var slotMu sync.Mutex

// closeOffload deletes the scan's range sets, returns its device memory and
// unloads the program; it returns the first error.
func closeOffload(devs []*offDevice) error {
	var first error
	keep := func(err error, what string, d *offDevice) {
		if err != nil && first == nil {
			first = errors.Wrapf(err, "compute: %s on %s", what, d.c.Name())
		}
	}
	for _, d := range devs {
		for _, rs := range d.rsids {
			keep(d.c.DeleteRangeSet(d.cn.CP, rs), "delete a memory range set", d)
		}
		d.rsids = nil
		d.release(0)
		if d.slot >= 0 {
			keep(d.c.DeactivateProgram(d.cn.CP, uint16(d.slot)), "deactivate the program", d)
			keep(d.c.UnloadProgram(d.cn.CP, uint16(d.slot)), "unload the program", d)
			d.slot = -1
		}
	}
	return first
}

// reaches reports whether d can copy blocks of a namespace of controller c
// into its memory, from what Identify Controller reports: its own
// namespaces, and those of the other controllers of its NVM subsystem (the
// same SUBNQN, with CMIC saying the subsystem has several controllers). If
// not, it says why.
func (d *offDevice) reaches(c *nvme.Controller) (bool, string) {
	if c == d.c {
		return true, ""
	}
	di, ci := d.c.IdentifyData(), c.IdentifyData()
	switch {
	case di.CMIC&nvme.CMICMultiController == 0:
		return false, fmt.Sprintf("compute device %s is alone in its NVM subsystem %s", d.c.Name(), di.SubNQN)
	case ci.SubNQN != di.SubNQN || ci.SubNQN == "":
		return false, fmt.Sprintf("%s is in NVM subsystem %q, not in %q of compute device %s", c.Name(), ci.SubNQN, di.SubNQN, d.c.Name())
	}
	return true, ""
}

// cntlid names data controller c as a Memory Copy source of device dev.
func cntlid(dev, c *nvme.Controller) uint16 {
	if dev == c {
		return 0
	}
	return c.IdentifyData().CNTLID
}

// state fetches the device's merged map state of program p, checked against
// p's declared maps.
func (d *offDevice) state(p *engine.Program) ([]engine.MapData, uint64, error) {
	const stateBytes = 1 << 20
	off, ok := d.alloc(stateBytes)
	if !ok {
		return nil, 0, errors.Errorf("compute: %s: no device memory left for the program's maps", d.c.Name())
	}
	rs, err := d.c.CreateRangeSet(d.cn.CP, []nvme.MemRange{{NSID: d.slm.ID, Offset: off, Length: 4}, {NSID: d.slm.ID, Offset: off, Length: stateBytes}})
	if err != nil {
		return nil, 0, err
	}
	d.rsids = append(d.rsids, rs)
	qp, err := d.c.NewQueuePair(4)
	if err != nil {
		return nil, 0, err
	}
	defer qp.Close()
	if _, err := syncCommand(qp, func(cb nvme.Completer) error {
		return qp.ExecuteProgram(d.cn.CP, uint16(d.slot), rs, 0, 0, 0, nvme.ExecFlagState, cb, 0)
	}); err != nil {
		return nil, 0, errors.Wrapf(err, "compute: %s: read program maps", d.c.Name())
	}
	buf, err := d.c.Transport().AllocDMA(stateBytes)
	if err != nil {
		return nil, 0, err
	}
	defer d.c.Transport().FreeDMA(buf)
	moved := uint64(0)
	read := func(at, n int) error {
		for n > 0 {
			k := min(n, d.c.MaxTransfer()&^7)
			if _, err := syncCommand(qp, func(cb nvme.Completer) error { return qp.MemoryRead(d.slm, off+uint64(at), buf, at, k, cb, 0) }); err != nil {
				return err
			}
			moved += uint64(k)
			at, n = at+k, n-k
		}
		return nil
	}
	if err := read(0, nvme.ExecResultSize); err != nil {
		return nil, moved, err
	}
	h := nvme.ParseExecResult(buf.Buf)
	if h.Flags&nvme.ExecOverflow != 0 || int(h.Count) > stateBytes-nvme.ExecResultSize {
		return nil, moved, errors.Errorf("compute: %s: program maps (%d bytes) exceed the %d-byte state area", d.c.Name(), h.Count, stateBytes)
	}
	if err := read(nvme.ExecResultSize, int(h.Count+3)&^3); err != nil {
		return nil, moved, err
	}
	maps, err := image.DecodeMapsFor(buf.Buf[nvme.ExecResultSize:nvme.ExecResultSize+int(h.Count)], p)
	return maps, moved, errors.Wrapf(err, "compute: %s", d.c.Name())
}

// offJob scans the targets offloaded to one compute device from one reactor,
// through its own queue pair to the device. Its scanLoop takes chunks from
// the targets' cursors, shared with the device's other jobs, a target at a
// time like a host worker; its chunk slots (device memory and a memory
// range set each) serve every target in turn, so what a scan takes of a
// device does not grow with the number of targets.
type offJob struct {
	_ [64]byte // nothing of another job's on this one's cache lines
	scanLoop
	dev    *offDevice
	qp     *nvme.QueuePair
	ots    []*offTarget // the loop's targets; shared, read-only but for the cursors
	chunks []offChunk
	toHost uint64
	// fetched counts the data bytes of chunks whose match list overflowed,
	// read back to host memory and run there again.
	fetched uint64
	emitCap int // values a chunk's output range holds
	exe     *engine.Executable
	inst    *engine.Instance // for chunks run again on the host; made on first use
	_       [64]byte
}

// offTarget is one target of an offload job.
type offTarget struct {
	loopTarget
	ns     *nvme.Namespace
	srcCtl uint16
}

// Chunk states: which command is outstanding.
const (
	stCopy = iota
	stExec
	stRead
	stReadMore
	stFetch
)

type offChunk struct {
	slot
	j       *offJob
	dataOff uint64 // SLM offset of the data range
	outOff  uint64 // SLM offset of the output range
	rsid    uint16
	buf     *nvme.DMA // host buffer for the match list
	data    *nvme.DMA // host buffer for the data, on the first overflow
	srcs    []nvme.MemCopySource
	state   int
	t       *offTarget
	count   int // values in the output range
	got     int // bytes read back so far (match list or data)
	t0      time.Time
	emit    []uint64 // the values read back, or of a run again on the host
}

// newOffJob makes a job on r over the targets mine (indexes into targets)
// offloaded to d, with up to slots chunks in flight; curs are the targets'
// cursors.
func newOffJob(r *poller.Reactor, d *offDevice, bases []*bdev.Bdev, targets []Target, mine []int, curs []*cursor, exe *engine.Executable, slots int, opts Options) (*offJob, error) {
	j := &offJob{dev: d, exe: exe}
	var per, bytes uint64
	var lts []*loopTarget
	for _, ti := range mine {
		b := bases[targets[ti].Base]
		c, ns := bdev.NVMeNamespace(b)
		t := &offTarget{loopTarget: loopTarget{cur: curs[ti], index: ti, name: b.Name(), nsid: ns.ID, bs: uint64(ns.BlockSize)}, ns: ns, srcCtl: cntlid(d.c, c)}
		j.ots = append(j.ots, t)
		lts = append(lts, &t.loopTarget)
		per, bytes = max(per, t.cur.per), max(bytes, t.cur.per*t.bs)
	}
	var err error
	if j.scanLoop, err = newScanLoop(r, "offload", j, exe.Program().Type, lts); err != nil {
		return nil, err
	}
	j.note = "offloaded to " + d.c.Name()
	j.cur = int(r.Core()) % len(lts) // spread the jobs' first targets
	first, bound := emitSizes(exe.Program(), per, bytes, opts.EmitCap)
	j.emits = emits{bound: bound, rerun: !hasWritableMaps(exe.Program())}
	// The output range: the whole bound for a program whose runs cannot be
	// repeated, else a value per 16 bytes of the chunk (at least the first
	// size of a host buffer). A list that overflows it is run again on the
	// host, from the chunk's data in device memory.
	emitCap := first
	if j.rerun {
		emitCap = min(bound, max(first, int(bytes/16)))
	}
	j.emitCap = emitCap
	outBytes := uint64(nvme.ExecResultSize + 8*emitCap)
	if outBytes > 1<<32-1 || bytes > 1<<32-1 {
		return nil, errors.New("compute: chunk too large for offload")
	}
	srcs := int((per + 65535) / 65536)
	if srcs > 128 {
		return nil, errors.New("compute: chunk too large for one Memory Copy")
	}
	// Fewer chunks if the device runs out of memory or range sets.
	j.chunks = make([]offChunk, max(slots, 1))
	for i := range j.chunks {
		ch := &j.chunks[i]
		mark := len(d.held)
		dataOff, ok1 := d.alloc(bytes)
		outOff, ok2 := d.alloc(outBytes)
		var rs uint16
		err := errNoDeviceMemory
		if ok1 && ok2 {
			rs, err = d.c.CreateRangeSet(d.cn.CP, []nvme.MemRange{
				{NSID: d.slm.ID, Offset: dataOff, Length: uint32(bytes)},
				{NSID: d.slm.ID, Offset: outOff, Length: uint32(outBytes)},
			})
		}
		if err != nil {
			d.release(mark)
			if i > 0 && (errors.Is(err, errNoDeviceMemory) || errors.Is(err, nvme.ErrRangeSetLimit)) {
				j.chunks = j.chunks[:i]
				break
			}
			j.free()
			if errors.Is(err, nvme.ErrRangeSetLimit) {
				err = errNoDeviceMemory
			}
			return nil, err
		}
		d.rsids = append(d.rsids, rs)
		buf, err := d.c.Transport().AllocDMA(int(outBytes))
		if err != nil {
			j.free()
			return nil, err
		}
		*ch = offChunk{slot: slot{i: i, seen: make([]uint64, (per+63)/64)}, j: j, dataOff: dataOff, outOff: outOff, rsid: rs, buf: buf,
			srcs: make([]nvme.MemCopySource, 0, srcs), emit: make([]uint64, emitCap)}
	}
	ss := make([]*slot, len(j.chunks))
	for i := range j.chunks {
		ss[i] = &j.chunks[i].slot
	}
	j.setSlots(ss)
	return j, nil
}

var errNoDeviceMemory = errors.New("compute: the compute device's memory is exhausted")

// free releases the job's host buffers; its range sets and device memory
// stay with the device until closeOffload.
func (j *offJob) free() error {
	var first error
	for _, c := range j.chunks {
		for _, b := range []*nvme.DMA{c.buf, c.data} {
			if b == nil {
				continue
			}
			if err := j.dev.c.Transport().FreeDMA(b); err != nil && first == nil {
				first = errors.Wrapf(err, "compute: free a buffer of %s", j.dev.c.Name())
			}
		}
	}
	j.chunks = nil
	return first
}

// openQueues opens the job's queue pair to the device.
func (j *offJob) openQueues() error {
	qp, err := j.dev.c.NewQueuePair(2*len(j.chunks) + 2)
	if err != nil {
		return err
	}
	j.qp = qp
	return nil
}

// closeQueues closes the job's queue pair; one that does not close stays,
// for the teardown to try again.
func (j *offJob) closeQueues() error {
	if j.qp == nil {
		return nil
	}
	if err := j.qp.Close(); err != nil {
		return errors.Wrapf(err, "compute: close the offload queue pair of %s on core %d", j.dev.c.Name(), j.r.Core())
	}
	j.qp = nil
	return nil
}

// submit starts chunk s: Memory Copy of its blocks into device memory.
func (j *offJob) submit(s *slot) error {
	c := &j.chunks[s.i]
	t := j.ots[s.tk]
	c.t = t
	c.srcs = c.srcs[:0]
	for b := uint64(0); b < c.blocks; b += 65536 {
		c.srcs = append(c.srcs, nvme.MemCopySource{Controller: t.srcCtl, NSID: t.nsid, LBA: c.lba + b, Blocks: uint32(min(65536, c.blocks-b))})
	}
	c.state = stCopy
	return j.qp.MemoryCopy(j.dev.slm, c.dataOff, c.srcs, c, 0)
}

func (j *offJob) refusal() (chunk, rest string) {
	return "memory copy", "not offloaded to " + j.dev.c.Name()
}

func (j *offJob) reap() int     { return j.qp.Process(0) }
func (j *offJob) inFlight() int { return j.qp.Outstanding() }

// Complete advances a chunk through copy, execute and read-back. It runs on
// the job's reactor.
func (c *offChunk) Complete(tag uint64, _ uint64, err error) {
	if !c.step(tag, err) {
		return // the next command of the chunk is in flight
	}
	c.j.done(&c.slot)
}

// step handles the completion of the chunk's current command and submits
// the next one; it reports whether the chunk is finished.
func (c *offChunk) step(tag uint64, err error) bool {
	j := c.j
	t := c.t
	var next error
	switch c.state {
	case stCopy:
		if err != nil {
			j.fault(&c.slot, errors.Wrap(err, "memory copy into device memory"))
			return true
		}
		c.state = stExec
		c.t0 = time.Now()
		next = j.qp.ExecuteProgram(j.dev.cn.CP, uint16(j.dev.slot), c.rsid, uint32(c.blocks*t.bs), c.lba, uint64(t.nsid)|t.bs<<32, 0, c, 0)
	case stExec:
		j.runNS += int64(time.Since(c.t0))
		j.counted(&c.slot, c.blocks*t.bs)
		if err != nil {
			j.fault(&c.slot, errors.Wrap(err, "program"))
			return true
		}
		c.state = stRead
		n := nvme.ExecResultSize + 8*min(firstRead, j.emitCap)
		next = j.qp.MemoryRead(j.dev.slm, c.outOff, c.buf, 0, n, c, uint64(n))
	case stRead:
		if err != nil {
			j.fault(&c.slot, errors.Wrap(err, "read back matches"))
			return true
		}
		j.toHost += tag
		h := nvme.ParseExecResult(c.buf.Buf)
		c.count = int(h.Count)
		if h.Flags&nvme.ExecOverflow != 0 || c.count > j.emitCap {
			j.overflows++
			if c.count <= j.emitCap {
				j.fault(&c.slot, errors.Errorf("device reported an overflow of %d values in a %d-value output range", c.count, j.emitCap))
				return true
			}
			if j.rerun {
				// Run the chunk again on the host, from its data in
				// device memory, with room for every value.
				c.state, c.got = stFetch, 0
				next = c.fetch()
				break
			}
			j.losses = append(j.losses, Loss{Target: t.index, Base: t.name, LBA: c.lba, Blocks: c.blocks, Values: uint64(c.count - j.emitCap), Where: j.dev.c.Name()})
			c.count = j.emitCap
		}
		c.got = nvme.ExecResultSize + 8*min(firstRead, j.emitCap)
		if c.count <= firstRead {
			j.collect(c)
			return true
		}
		c.state = stReadMore
		next = c.readMore()
	case stReadMore:
		if err != nil {
			j.fault(&c.slot, errors.Wrap(err, "read back matches"))
			return true
		}
		j.toHost += tag
		c.got += int(tag)
		if c.got < nvme.ExecResultSize+8*c.count {
			next = c.readMore()
			break
		}
		j.collect(c)
		return true
	case stFetch:
		if err != nil {
			j.fault(&c.slot, errors.Wrap(err, "read back the data of an overflowed match list"))
			return true
		}
		j.toHost += tag
		j.fetched += tag
		c.got += int(tag)
		if c.got < int(c.blocks*t.bs) {
			next = c.fetch()
			break
		}
		j.rerunOnHost(c)
		return true
	}
	if next != nil {
		j.fault(&c.slot, errors.Wrap(next, "submit"))
		return true
	}
	return false
}

// readMore reads the next piece of the match list (at most a transfer).
func (c *offChunk) readMore() error {
	j := c.j
	n := min(nvme.ExecResultSize+8*c.count-c.got, j.dev.c.MaxTransfer()&^7)
	if n <= 0 {
		// (openOffload refuses such a device; a read of nothing would
		// never get to the end of the list.)
		return errors.Errorf("compute: %s: reading back %d values at byte %d of the match list: the device moves at most %d bytes per command",
			j.dev.c.Name(), c.count, c.got, j.dev.c.MaxTransfer())
	}
	return j.qp.MemoryRead(j.dev.slm, c.outOff+uint64(c.got), c.buf, c.got, n, c, uint64(n))
}

// fetch reads the next piece of the chunk's data back to the host.
func (c *offChunk) fetch() error {
	j := c.j
	if c.data == nil {
		d, err := j.dev.c.Transport().AllocDMA(len(j.chunks[0].seen) * 64 * int(maxBS(j.ots)))
		if err != nil {
			return err
		}
		c.data = d
	}
	n := min(int(c.blocks*c.t.bs)-c.got, j.dev.c.MaxTransfer()&^3)
	if n <= 0 {
		return errors.Errorf("compute: %s: reading back byte %d of a chunk's data: the device moves at most %d bytes per command",
			j.dev.c.Name(), c.got, j.dev.c.MaxTransfer())
	}
	return j.qp.MemoryRead(j.dev.slm, c.dataOff+uint64(c.got), c.data, c.got, n, c, uint64(n))
}

func maxBS(ts []*offTarget) uint64 {
	bs := uint64(0)
	for _, t := range ts {
		bs = max(bs, t.bs)
	}
	return bs
}

// rerunOnHost runs the program on a chunk fetched from device memory, on
// the job's core, with an emit buffer that grows to the bound.
func (j *offJob) rerunOnHost(c *offChunk) {
	t := c.t
	if j.inst == nil {
		j.inst = j.exe.NewInstance()
	}
	n := c.blocks * t.bs
	ctx := engine.Context{Data: c.data.Buf[:n], LBA: c.lba, NSID: t.nsid, BlockSize: uint32(t.bs), BlockCount: uint32(c.blocks)}
	want := min(c.count, j.bound)
	if len(c.emit) < want {
		c.emit = make([]uint64, want)
	}
	res, err := j.inst.Run(&ctx, c.emit)
	if err != nil {
		j.fault(&c.slot, errors.Wrap(err, "program run again on the host"))
		return
	}
	j.reruns++
	if res.Dropped > 0 {
		j.losses = append(j.losses, Loss{Target: t.index, Base: t.name, LBA: c.lba, Blocks: c.blocks, Values: uint64(res.Dropped), Where: "host"})
	}
	j.collectValues(c, c.emit[:res.Emitted])
}

// collect turns the read-back values into matches.
func (j *offJob) collect(c *offChunk) {
	vals := c.buf.Buf[nvme.ExecResultSize:]
	if cap(c.emit) < c.count {
		c.emit = make([]uint64, c.count)
	}
	v := c.emit[:c.count]
	for i := range v {
		v[i] = binary.LittleEndian.Uint64(vals[8*i:])
	}
	j.collectValues(c, v)
}

// collectValues checks a chunk's values (in c.emit) and keeps them to
// deliver.
func (j *offJob) collectValues(c *offChunk, vals []uint64) {
	t := c.t
	n := c.blocks * t.bs
	for _, v := range vals {
		if j.typ == abi.TypeFilter && (v < c.lba || v >= c.lba+c.blocks) {
			j.fault(&c.slot, errors.Errorf("device reported LBA %d outside its chunk", v))
			return
		}
		if j.typ != abi.TypeFilter && v >= n {
			j.fault(&c.slot, errors.Errorf("program emitted offset %d outside its %d-byte chunk", v, n))
			return
		}
	}
	c.vals, c.sent = vals, 0
	j.matched(&c.slot, vals)
}
