package mock

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/poller"
)

// The emulated computational storage device: a compute namespace (CSI 4,
// Computational Programs) with program slots that runs the project's verified
// eBPF engine, and memory namespaces (CSI 3, Subsystem Local Memory) it
// computes on. Commands and the Execute Program result convention are defined
// in nvme/compute.go. A controller becomes compute-capable by having
// namespaces with those CSIs (NamespaceConfig.CSI); CAP.CSS bit 6 and Identify
// CNS 1Ch then advertise the command sets.
//
// Programs run on compute cores. An Inline controller runs Execute Program
// on the goroutine that rang the doorbell, one per queue; a DeviceCore
// controller's device core hands each one to the compute core of its queue
// (ComputeConfig.Cores) and goes on fetching commands, so the queues of
// several host reactors execute in parallel. Each queue has its own engine
// instance of a program; their maps are merged when read.

// ComputeConfig sets the limits of a controller's compute namespaces.
type ComputeConfig struct {
	// Slots is the number of program slots (default 8).
	Slots int
	// MaxActive is how many programs may be active at once (default 4).
	MaxActive int
	// MaxRangeSets is the number of memory range sets (default 64).
	MaxRangeSets int
	// MaxRanges is the number of ranges per set (default 8).
	MaxRanges int
	// MaxProgram is the largest program image in bytes (default 1 MiB).
	MaxProgram int
	// Budget is the instruction budget of one program run (0: the
	// runner's default).
	Budget int64
	// MapMemory is the host memory the maps of one program may take over
	// all its instances (one per submission queue that runs it) (0: the
	// runner's default).
	MapMemory int64
	// Runner verifies and runs the programs the host loads. The emulator
	// has no engine of its own: whoever builds a compute device injects
	// one (compute/csd.Runner is the project's verified eBPF engine).
	// Without a runner every program is refused as invalid.
	Runner ProgramRunner
	// Cores is the number of compute cores that run Execute Program on a
	// controller in DeviceCore mode: the executions of I/O queue q run on
	// core q mod Cores, in parallel with each other and with the device
	// core that fetches commands. 0 means one compute core per I/O queue
	// that executes programs. (Inline controllers run programs on the
	// goroutine that rang the doorbell: one per queue already.)
	Cores int
}

func (cc *ComputeConfig) fill() {
	if cc.Slots <= 0 {
		cc.Slots = 8
	}
	if cc.MaxActive <= 0 {
		cc.MaxActive = 4
	}
	if cc.MaxRangeSets <= 0 {
		cc.MaxRangeSets = 64
	}
	if cc.MaxRanges <= 0 {
		cc.MaxRanges = 8
	}
	if cc.MaxProgram <= 0 {
		cc.MaxProgram = 1 << 20
	}
}

// computeState is a controller's compute device state. mu guards the tables;
// program runs of different SQs proceed in parallel, each on its own engine
// instance.
type computeState struct {
	once sync.Once
	cfg  ComputeConfig

	// cores are the compute cores of a DeviceCore controller, by core
	// index; only the device core (the one goroutine that executes
	// commands in that mode) reads or grows the table.
	cores []*execCore
	// execHook, when set (by tests), runs on the compute core before each
	// program run.
	execHook func()

	mu        sync.Mutex
	slots     []progSlot
	rangeSets map[uint16][]nvme.MemRange
	nextRSID  uint16
	mem       map[uint32][]byte // SLM namespace memory by NSID, allocated on first use
	log       []string
}

type progSlot struct {
	ptype   uint8
	size    int
	recv    int
	buf     []byte
	exe     Program // set when the whole image arrived and verified
	active  bool
	runners map[uint16]*runner // per SQ
}

// runner is one SQ's engine instance of a program.
type runner struct {
	inst ProgramInstance
	ctx  ExecContext
	emit []uint64
}

func (c *Controller) compute() *computeState {
	s := c.bus.computeOf(c)
	s.once.Do(func() {
		if c.cfg.Compute != nil {
			s.cfg = *c.cfg.Compute
		}
		s.cfg.fill()
		s.slots = make([]progSlot, s.cfg.Slots)
		s.rangeSets = map[uint16][]nvme.MemRange{}
		s.mem = map[uint32][]byte{}
	})
	return s
}

// ComputeLog returns the compute device's log: why programs were refused or
// faulted, oldest first.
func (c *Controller) ComputeLog() []string {
	s := c.compute()
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.log...)
}

const computeLogEntries = 256

func (s *computeState) logf(format string, args ...any) {
	s.mu.Lock()
	s.logLocked(format, args...)
	s.mu.Unlock()
}

func (s *computeState) logLocked(format string, args ...any) {
	s.log = append(s.log, fmt.Sprintf(format, args...))
	if len(s.log) > computeLogEntries {
		s.log = s.log[len(s.log)-computeLogEntries:]
	}
}

func init() {
	cs := &CommandSet{CSI: nvme.CSICP, Name: "Computational Programs"}
	cs.handlers[nvme.OpExecProgram] = cpExecute
	cs.identifyNS = func(c *Controller, ns *namespace, b []byte) {
		cfg := c.compute().cfg
		putCPInfo(b, nvme.CPInfo{Slots: uint16(cfg.Slots), MaxActive: uint16(cfg.MaxActive),
			MaxRangeSets: uint16(cfg.MaxRangeSets), MaxRanges: uint16(cfg.MaxRanges),
			MaxProgram: uint32(cfg.MaxProgram), ProgTypes: 1})
	}
	registerCommandSet(cs)
}

// cpNamespace returns the compute namespace an admin command names.
func (c *Controller) cpNamespace(e *nvme.SQE) *namespace {
	if e.NSID == 0 || int(e.NSID) > len(c.namespaces) {
		return nil
	}
	ns := c.namespaces[e.NSID-1]
	if ns.csi != nvme.CSICP {
		return nil
	}
	return ns
}

// computeAdmin executes the CP admin commands. Caller holds ctl.
func (c *Controller) computeAdmin(e *nvme.SQE) completion {
	if c.cpNamespace(e) == nil {
		return failDNR(nvme.ErrInvalidNamespace)
	}
	s := c.compute()
	switch e.OPC {
	case nvme.AdminLoadProgram:
		return c.loadProgram(s, e)
	case nvme.AdminProgActMgmt:
		return s.activation(e)
	case nvme.AdminMemRangeSetMg:
		return c.rangeSetMgmt(s, e)
	}
	return failDNR(nvme.ErrInvalidOpcode)
}

func (c *Controller) loadProgram(s *computeState, e *nvme.SQE) completion {
	slot := int(e.CDW10 & 0xffff)
	ptype := uint8(e.CDW10 >> 16)
	unload := e.CDW10>>24&1 == nvme.LoadSelUnload
	if slot >= len(s.slots) {
		return failDNR(nvme.ErrInvalidProgramIndex)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := &s.slots[slot]
	if p.active {
		return failDNR(nvme.ErrProgramActive)
	}
	if unload {
		*p = progSlot{}
		return ok()
	}
	if ptype != nvme.ProgTypeEBPF {
		s.logLocked("slot %d: program type %#x is not supported (eBPF is %#x)", slot, ptype, nvme.ProgTypeEBPF)
		return failDNR(nvme.ErrInvalidField)
	}
	psize, numb, loff := int(e.CDW11), int(e.CDW14), int(e.CDW15)
	if psize == 0 || psize > s.cfg.MaxProgram {
		s.logLocked("slot %d: program of %d bytes exceeds the %d-byte limit", slot, psize, s.cfg.MaxProgram)
		return failDNR(nvme.ErrCommandSizeLimit)
	}
	if loff == 0 {
		*p = progSlot{ptype: ptype, size: psize, buf: make([]byte, psize)}
	}
	if p.buf == nil || p.size != psize || loff != p.recv || numb <= 0 || numb > psize-loff {
		*p = progSlot{}
		return failDNR(nvme.ErrInvalidField) // chunks must arrive in order and add up
	}
	if st := c.readHost(e, p.buf[loff:loff+numb]); st != stOK {
		*p = progSlot{}
		return completion{status: st}
	}
	p.recv += numb
	if p.recv < p.size {
		return ok()
	}
	var err error
	if s.cfg.Runner == nil {
		err = errNoRunner
	} else {
		p.exe, err = s.cfg.Runner.Load(p.buf, s.cfg.MapMemory)
	}
	if err != nil {
		*p = progSlot{}
		s.logLocked("slot %d: program refused: %v", slot, err)
		return failDNR(nvme.ErrInvalidProgram)
	}
	p.buf = nil
	p.runners = map[uint16]*runner{}
	return ok()
}

func (s *computeState) activation(e *nvme.SQE) completion {
	slot := int(e.CDW10 & 0xffff)
	sel := e.CDW10 >> 16 & 0xf
	if slot >= len(s.slots) {
		return failDNR(nvme.ErrInvalidProgramIndex)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := &s.slots[slot]
	switch sel {
	case nvme.ProgSelActivate:
		if p.exe == nil {
			return failDNR(nvme.ErrInvalidProgramIndex)
		}
		if p.active {
			return ok()
		}
		n := 0
		for i := range s.slots {
			if s.slots[i].active {
				n++
			}
		}
		if n >= s.cfg.MaxActive {
			return failDNR(nvme.ErrActiveLimit)
		}
		p.active = true
	case nvme.ProgSelDeactivate:
		p.active = false
	default:
		return failDNR(nvme.ErrInvalidField)
	}
	return ok()
}

func (c *Controller) rangeSetMgmt(s *computeState, e *nvme.SQE) completion {
	sel := e.CDW10 & 0xf
	rsid := uint16(e.CDW10 >> 16)
	switch sel {
	case nvme.RangeSetSelDelete:
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.rangeSets[rsid]; !ok {
			return failDNR(nvme.ErrInvalidRangeSet)
		}
		delete(s.rangeSets, rsid)
		return ok()
	case nvme.RangeSetSelCreate:
	default:
		return failDNR(nvme.ErrInvalidField)
	}
	n := int(e.CDW11&0xff) + 1
	if n > s.cfg.MaxRanges {
		return failDNR(nvme.ErrCommandSizeLimit)
	}
	desc := make([]byte, n*nvme.MemRangeSize)
	if st := c.readHost(e, desc); st != stOK {
		return completion{status: st}
	}
	ranges := make([]nvme.MemRange, n)
	for i := range ranges {
		r := parseMemRange(desc[i*nvme.MemRangeSize:])
		// Reachability: a compute namespace reaches the memory namespaces of
		// its own controller, nothing else.
		mns := c.slmNamespace(r.NSID)
		if mns == nil {
			s.logf("range set: range %d names namespace %d, which is not a memory namespace this compute namespace reaches", i, r.NSID)
			return failDNR(nvme.ErrMemoryUnreachable)
		}
		if r.Length == 0 || r.Offset > mns.slmSize() || uint64(r.Length) > mns.slmSize()-r.Offset {
			return failDNR(nvme.ErrInvalidField)
		}
		ranges[i] = r
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.rangeSets) >= s.cfg.MaxRangeSets {
		return failDNR(nvme.ErrRangeSetLimit)
	}
	for {
		s.nextRSID++
		if s.nextRSID == 0 {
			s.nextRSID = 1
		}
		if _, used := s.rangeSets[s.nextRSID]; !used {
			break
		}
	}
	s.rangeSets[s.nextRSID] = ranges
	return completion{dw0: uint32(s.nextRSID)}
}

// slmNamespace returns this controller's memory namespace nsid, or nil.
func (c *Controller) slmNamespace(nsid uint32) *namespace {
	if nsid == 0 || int(nsid) > len(c.namespaces) {
		return nil
	}
	ns := c.namespaces[nsid-1]
	if ns.csi != nvme.CSISLM {
		return nil
	}
	return ns
}

// cpExecute runs an active program over a memory range set: range 0 is the
// data, range 1 receives the ExecResult header and the emitted values. On a
// DeviceCore controller the run goes to the queue's compute core and
// completes from there; the device core goes on fetching commands.
func cpExecute(c *Controller, sq *sq, ns *namespace, e *nvme.SQE) completion {
	if c.cfg.Mode != DeviceCore {
		return c.execProgram(sq, e)
	}
	s := c.compute()
	if !s.dispatch(c, sq, e) {
		return c.execProgram(sq, e) // the core's queue is full: run it here
	}
	return completion{noPost: true}
}

// execCore is a compute core: a ring of executions from the device core
// and a goroutine that runs them while there are any. The goroutine ends
// when the ring is empty and the next dispatch starts another, so an idle
// device holds none, and a closed controller leaves none behind.
type execCore struct {
	ring    *poller.SPSC[*execJob] // device core -> compute core
	free    *poller.SPSC[*execJob] // compute core -> device core: reusable jobs
	running atomic.Bool
}

// execJob is one Execute Program handed to a compute core.
type execJob struct {
	c  *Controller
	sq *sq
	e  nvme.SQE // a copy: the SQ's command buffer moves on
}

const execRing = 1024

// dispatch hands an Execute Program of sq to its compute core; false if the
// core's ring is full. Called by the device core only.
func (s *computeState) dispatch(c *Controller, sq *sq, e *nvme.SQE) bool {
	idx := int(sq.id)
	if s.cfg.Cores > 0 {
		idx %= s.cfg.Cores
	}
	for len(s.cores) <= idx {
		s.cores = append(s.cores, nil)
	}
	core := s.cores[idx]
	if core == nil {
		ring, err1 := poller.NewSPSC[*execJob](execRing)
		free, err2 := poller.NewSPSC[*execJob](execRing)
		if err1 != nil || err2 != nil {
			return false
		}
		core = &execCore{ring: ring, free: free}
		s.cores[idx] = core
	}
	j, ok := core.free.Pop()
	if !ok {
		j = new(execJob)
	}
	j.c, j.sq, j.e = c, sq, *e
	if !core.ring.Push(j) {
		return false
	}
	if core.running.CompareAndSwap(false, true) {
		go core.run()
	}
	return true
}

// run executes the core's jobs until its ring is empty.
func (core *execCore) run() {
	for {
		for {
			j, ok := core.ring.Pop()
			if !ok {
				break
			}
			r := j.c.execProgram(j.sq, &j.e)
			j.c.postLater(j.sq, &j.e, r)
			j.c, j.sq = nil, nil
			core.free.Push(j) // dropped if full
		}
		core.running.Store(false)
		// A job pushed after the last Pop and before the Store found the
		// core running and started nobody: take it.
		if core.ring.Len() == 0 || !core.running.CompareAndSwap(false, true) {
			return
		}
	}
}

// postLater posts the completion of a command executed off the device core.
// It waits while the host has not made room in the CQ, and drops the
// completion if the queue was deleted or the controller failed, reset or
// closed meanwhile.
func (c *Controller) postLater(s *sq, e *nvme.SQE, r completion) {
	q := s.cq
	for {
		q.mu.Lock()
		if s.deleted || q.deleted || c.closed.Load() || c.hung.Load() || c.csts.Load()&nvme.CSTSFatal != 0 {
			q.mu.Unlock()
			return
		}
		if !q.full() {
			q.post(s.id, s.head, e.CID, r)
			q.mu.Unlock()
			if r.status != 0 {
				c.noteError(s, e, r)
			}
			return
		}
		q.mu.Unlock()
		time.Sleep(20 * time.Microsecond)
	}
}

// execProgram runs an Execute Program command of sq and returns its
// completion. The tables are looked up in one critical section; the
// program runs outside it, on the SQ's own engine instance.
func (c *Controller) execProgram(sq *sq, e *nvme.SQE) completion {
	s := c.compute()
	slot := int(e.CDW2 & 0xffff)
	rsid := uint16(e.CDW2 >> 16)
	if slot >= len(s.slots) {
		return failDNR(nvme.ErrInvalidProgramIndex)
	}
	s.mu.Lock()
	p := &s.slots[slot]
	if !p.active || p.exe == nil {
		s.mu.Unlock()
		return failDNR(nvme.ErrProgramNotActive)
	}
	ranges, okSet := s.rangeSets[rsid]
	if !okSet || len(ranges) < 2 {
		s.mu.Unlock()
		return failDNR(nvme.ErrInvalidRangeSet)
	}
	in, out := ranges[0], ranges[1]
	run := p.runners[sq.id]
	if run == nil {
		inst, err := p.exe.NewInstance(len(p.runners)+1, s.cfg.Budget)
		if err != nil {
			s.logLocked("slot %d: queue %d: %v", slot, sq.id, err)
			s.mu.Unlock()
			return failDNR(nvme.ErrCapacityExceeded)
		}
		run = &runner{inst: inst}
		p.runners[sq.id] = run
	}
	var enc []byte
	if e.CDW15&nvme.ExecFlagState != 0 {
		// The maps of every queue's instance, merged. (Read them once the
		// runs that update them have completed.)
		insts := make([]ProgramInstance, 0, len(p.runners))
		for _, r := range p.runners {
			insts = append(insts, r.inst)
		}
		enc = p.exe.MapState(insts)
	}
	inMem, outMem := s.slmBytesLocked(c, in), s.slmBytesLocked(c, out)
	hook := s.execHook
	s.mu.Unlock()
	if inMem == nil || outMem == nil || len(outMem) < nvme.ExecResultSize {
		return failDNR(nvme.ErrInvalidRangeSet)
	}
	if e.CDW15&nvme.ExecFlagState != 0 {
		r := nvme.ExecResult{Count: uint32(len(enc))}
		if len(enc) > len(outMem)-nvme.ExecResultSize {
			r.Flags |= nvme.ExecOverflow
		} else {
			copy(outMem[nvme.ExecResultSize:], enc)
		}
		putExecResult(outMem, r)
		return ok()
	}
	dlen := uint64(uint32(e.MPTR)) // DLEN: CDW4
	if dlen == 0 {
		dlen = uint64(in.Length)
	}
	if dlen > uint64(in.Length) {
		return failDNR(nvme.ErrInvalidField)
	}
	p1 := uint64(e.CDW10) | uint64(e.CDW11)<<32
	p2 := uint64(e.CDW12) | uint64(e.CDW13)<<32
	// The context lives in the queue's runner: passed to an interface, a
	// local would escape and cost an allocation per run.
	ctx := &run.ctx
	*ctx = ExecContext{Data: inMem[:dlen], LBA: p1, NSID: uint32(p2), BlockSize: uint32(p2 >> 32)}
	if bs := uint64(ctx.BlockSize); bs != 0 {
		if dlen%bs != 0 {
			return failDNR(nvme.ErrInvalidField)
		}
		ctx.BlockCount = uint32(dlen / bs)
	}
	capVals := (len(outMem) - nvme.ExecResultSize) / 8
	if cap(run.emit) < capVals {
		run.emit = make([]uint64, capVals)
	}
	emit := run.emit[:capVals]
	if hook != nil {
		hook()
	}
	res, err := run.inst.Run(ctx, emit)
	if err != nil {
		s.logf("slot %d: program fault over nsid %d LBA %d (%d bytes): %v", slot, ctx.NSID, ctx.LBA, dlen, err)
		return fail(nvme.ErrProgramFault)
	}
	// Count is every value the program emitted, those that did not fit
	// too: the host learns how many it lost.
	r := nvme.ExecResult{Count: uint32(min(uint64(res.Emitted)+uint64(res.Dropped), 1<<32-1)), R0: res.R0}
	if res.Overflow {
		r.Flags |= nvme.ExecOverflow
	}
	putExecResult(outMem, r)
	vals := outMem[nvme.ExecResultSize:]
	for i, v := range emit[:res.Emitted] {
		le.PutUint64(vals[8*i:], v)
	}
	return completion{dw0: uint32(res.R0), dw1: uint32(res.R0 >> 32)}
}

// slmBytesLocked is slmBytes for a caller that holds s.mu.
func (s *computeState) slmBytesLocked(c *Controller, r nvme.MemRange) []byte {
	ns := c.slmNamespace(r.NSID)
	if ns == nil {
		return nil
	}
	m := c.slmMemLocked(s, ns)
	if r.Offset > uint64(len(m)) || uint64(r.Length) > uint64(len(m))-r.Offset {
		return nil
	}
	return m[r.Offset : r.Offset+uint64(r.Length)]
}
