package mock

import (
	"fmt"
	"maps"
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
// (ComputeConfig.Cores), and each Memory Copy into the device's memory
// (slm.go) to the queue's own copy engine, and goes on fetching commands,
// so the queues of several host reactors copy and execute in parallel.
// Each queue has its own engine instance of a program; their maps are
// merged when read. Execute Program takes no lock: it reads the program
// slots and memory range sets from a table the admin commands replace
// (copy-on-write).
//
// A compute core of real hardware runs at a rate of its own, whatever the
// host's CPUs do; the emulator's cores are goroutines on the host's CPUs.
// ComputeConfig.Rate makes a DeviceCore controller's compute cores model a
// finite rate: a run's completion is posted no earlier than its bytes take
// at that rate on its core (after the runs before it), and the core waits
// without taking a CPU. Time so reported is emulated.

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
	// core q mod Cores, in parallel with each other, with the device core
	// that fetches commands and with the queues' copy engines (Memory
	// Copy). 0 means one compute core per I/O queue that executes
	// programs. (Inline controllers run programs on the goroutine that
	// rang the doorbell: one per queue already.)
	Cores int
	// Rate is the emulated compute rate of one compute core of a
	// DeviceCore controller, in bytes of program input per second: a run
	// over n bytes completes no sooner than n/Rate after the core's
	// previous run (or its own arrival), as on a device whose cores
	// compute at a fixed speed, however many host CPUs run the emulator.
	// A run the host's CPU takes longer over completes when it is done.
	// 0: no model, runs complete as fast as the host runs them.
	Rate int64
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

// computeState is a controller's compute device state. mu guards the tables
// the admin commands change; they publish what Execute Program reads in tab,
// so program runs of different SQs proceed in parallel without a lock, each
// on its own engine instance.
type computeState struct {
	once sync.Once
	cfg  ComputeConfig

	// cores are the compute cores of a DeviceCore controller, by core
	// index, and copiers its copy engines, by QID: each queue's Memory
	// Copies run on a copy engine of their own, beside the compute cores
	// (a DMA engine of the device). Only the device core (the one
	// goroutine that executes commands in that mode) reads or grows the
	// tables.
	cores, copiers []*execCore
	// execHook, when set (by tests), runs on the compute core before each
	// program run.
	execHook atomic.Pointer[func()]
	// tab is what Execute Program reads: replaced under mu, read without.
	tab atomic.Pointer[cpTable]

	mu        sync.Mutex
	slots     []progSlot
	rangeSets map[uint16][]nvme.MemRange
	nextRSID  uint16
	mem       map[uint32][]byte // SLM namespace memory by NSID, allocated on first use
	log       []string
}

// cpTable is a snapshot of the active programs and the memory range sets,
// never changed once published.
type cpTable struct {
	progs     []*loadedProgram // by slot; nil: no active program
	rangeSets map[uint16][]nvme.MemRange
}

type progSlot struct {
	ptype  uint8
	size   int
	recv   int
	buf    []byte
	prog   *loadedProgram // set when the whole image arrived and verified
	active bool
}

// loadedProgram is a verified program and its engine instances, one per SQ
// that ran it.
type loadedProgram struct {
	exe Program
	// runners are by QID; a queue's runner is made on its first run
	// (under computeState.mu) and only that queue's executor uses it.
	runners []atomic.Pointer[runner]
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
		s.publishLocked()
	})
	return s
}

// publishLocked publishes the active programs and range sets for Execute
// Program. Caller holds mu (or is the one initialising s).
func (s *computeState) publishLocked() {
	t := &cpTable{progs: make([]*loadedProgram, len(s.slots)), rangeSets: maps.Clone(s.rangeSets)}
	for i := range s.slots {
		if s.slots[i].active {
			t.progs[i] = s.slots[i].prog
		}
	}
	s.tab.Store(t)
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
		return ok() // (an inactive slot is not in the published table)
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
	var exe Program
	if s.cfg.Runner == nil {
		err = errNoRunner
	} else {
		exe, err = s.cfg.Runner.Load(p.buf, s.cfg.MapMemory)
	}
	if err != nil {
		*p = progSlot{}
		s.logLocked("slot %d: program refused: %v", slot, err)
		return failDNR(nvme.ErrInvalidProgram)
	}
	p.buf = nil
	p.prog = &loadedProgram{exe: exe, runners: make([]atomic.Pointer[runner], len(c.sqs))}
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
		if p.prog == nil {
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
	s.publishLocked()
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
		s.publishLocked()
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
	s.publishLocked()
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
		r, _ := c.execProgram(sq, e)
		return r
	}
	return c.compute().dispatch(c, sq, e, jobExec)
}

// execCore is a compute core (or a copy engine): a ring of commands from the
// device core and a goroutine that runs them while there are any. The
// goroutine ends when the ring has stayed empty for coreLinger (and no
// completion waits for its emulated time), and the next dispatch starts
// another, so an idle device holds none, and a closed controller leaves
// none behind.
type execCore struct {
	ring    *poller.SPSC[*execJob] // device core -> compute core
	free    *poller.SPSC[*execJob] // compute core -> device core: reusable jobs
	running atomic.Bool

	// The emulated rate (ComputeConfig.Rate), the core goroutine's own:
	// clock is when its modelled work ends, and held are completions
	// waiting for their time, in order.
	rate  int64
	clock time.Time
	held  []*execJob
	timer *time.Timer
	// sleeping is set while the goroutine waits for a held completion's
	// time or, idle, for a job; a dispatch then wakes it through wake.
	sleeping atomic.Bool
	wake     chan struct{}
}

// Kinds of execJob.
const (
	jobExec = iota // Execute Program
	jobCopy        // Memory Copy into device memory
)

// execJob is one command handed to a compute core or copy engine.
type execJob struct {
	c    *Controller
	sq   *sq
	e    nvme.SQE // a copy: the SQ's command buffer moves on
	kind int
	at   time.Time // when the device core handed it over (Rate only)
	r    completion
	due  time.Time // when its completion is posted (Rate only)
	desc []byte    // Memory Copy's source descriptors
}

const execRing = 1024

// coreOf returns the core that runs the commands of kind of sq (its compute
// core, or its copy engine), making it on first use. Called by the device
// core only.
func (s *computeState) coreOf(sq *sq, kind int) *execCore {
	idx, tab, rate := int(sq.id), &s.cores, s.cfg.Rate
	if kind == jobCopy {
		tab, rate = &s.copiers, 0
	} else if s.cfg.Cores > 0 {
		idx %= s.cfg.Cores
	}
	for len(*tab) <= idx {
		*tab = append(*tab, nil)
	}
	core := (*tab)[idx]
	if core == nil {
		ring, err1 := poller.NewSPSC[*execJob](execRing)
		free, err2 := poller.NewSPSC[*execJob](execRing)
		if err1 != nil || err2 != nil {
			return nil // (execRing is a power of two: not reached)
		}
		core = &execCore{ring: ring, free: free, rate: rate, wake: make(chan struct{}, 1)}
		(*tab)[idx] = core
	}
	return core
}

// coreFull reports whether e is a command of I/O queue sq that a compute
// core of a DeviceCore controller executes and whose core has no room for
// it now. Called by the device core only (which alone pushes to the rings,
// so room it sees stays).
func (c *Controller) coreFull(sq *sq, e *nvme.SQE) bool {
	if c.cfg.Mode != DeviceCore || sq.id == 0 || e.NSID == 0 || int(e.NSID) > len(c.namespaces) {
		return false
	}
	var kind int
	switch csi := c.namespaces[e.NSID-1].csi; {
	case csi == nvme.CSICP && e.OPC == nvme.OpExecProgram:
		kind = jobExec
	case csi == nvme.CSISLM && e.OPC == nvme.OpMemCopy:
		kind = jobCopy
	default:
		return false
	}
	core := c.compute().coreOf(sq, kind)
	return core != nil && core.ring.Len() >= core.ring.Cap()
}

// dispatch hands a command of sq to its compute core, which has room
// (coreFull), and returns a completion not to post. Called by the device
// core only.
func (s *computeState) dispatch(c *Controller, sq *sq, e *nvme.SQE, kind int) completion {
	core := s.coreOf(sq, kind)
	if core == nil {
		return c.runHere(sq, e, kind)
	}
	j, ok := core.free.Pop()
	if !ok {
		j = new(execJob)
	}
	j.c, j.sq, j.e, j.kind = c, sq, *e, kind
	if core.rate > 0 {
		j.at = time.Now()
	}
	core.ring.Push(j)
	if core.running.CompareAndSwap(false, true) {
		go core.run()
	} else if core.sleeping.Load() {
		select {
		case core.wake <- struct{}{}:
		default:
		}
	}
	return completion{noPost: true}
}

// runHere executes a command meant for a compute core on the device core.
func (c *Controller) runHere(sq *sq, e *nvme.SQE, kind int) completion {
	if kind == jobCopy {
		return c.memCopy(sq, e, sq.scratch, true)
	}
	r, _ := c.execProgram(sq, e)
	return r
}

// run executes the core's jobs until its ring has stayed empty for
// coreLinger and nothing waits for its emulated time.
func (core *execCore) run() {
	for {
		for {
			core.postDue()
			j, ok := core.ring.Pop()
			if !ok {
				break
			}
			core.exec(j)
		}
		if len(core.held) > 0 {
			core.sleep(time.Until(core.held[0].due))
			continue
		}
		// Idle: wait a little for the next job before ending, so that a
		// queue that goes on submitting does not start a goroutine per
		// command.
		if core.sleep(coreLinger) {
			continue
		}
		core.running.Store(false)
		// A job pushed after the last Pop and before the Store found the
		// core running and started nobody: take it.
		if core.ring.Len() == 0 || !core.running.CompareAndSwap(false, true) {
			return
		}
	}
}

// exec executes one job and posts its completion, or holds it until its
// emulated time.
func (core *execCore) exec(j *execJob) {
	c := j.c
	var n int
	if j.kind == jobCopy {
		j.r = c.memCopyOnCore(j)
	} else {
		j.r, n = c.execProgram(j.sq, &j.e)
	}
	if core.rate > 0 && n > 0 {
		// The run took n/rate of the core's time, after the runs before
		// it and not before it arrived; never less than it really took.
		start := j.at
		if core.clock.After(start) {
			start = core.clock
		}
		j.due = start.Add(time.Duration(float64(n) / float64(core.rate) * float64(time.Second)))
		core.clock = j.due
		if time.Now().Before(j.due) {
			core.held = append(core.held, j)
			return
		}
	}
	core.post(j)
}

// post posts a job's completion and recycles the job.
func (core *execCore) post(j *execJob) {
	if !j.r.noPost {
		j.c.postLater(j.sq, &j.e, j.r)
	}
	j.c, j.sq = nil, nil
	core.free.Push(j) // dropped if full
}

// postDue posts the held completions whose time has come.
func (core *execCore) postDue() {
	if len(core.held) == 0 {
		return
	}
	now := time.Now()
	k := 0
	for k < len(core.held) && !now.Before(core.held[k].due) {
		core.post(core.held[k])
		core.held[k] = nil
		k++
	}
	core.held = core.held[:copy(core.held, core.held[k:])]
}

// coreLinger is how long an idle core's goroutine waits for a job before
// it ends.
const coreLinger = 2 * time.Millisecond

// sleep waits, without taking a CPU, for d or until a dispatch brings a job;
// it reports whether a job is there.
func (core *execCore) sleep(d time.Duration) bool {
	if d <= 0 {
		return core.ring.Len() > 0
	}
	core.sleeping.Store(true)
	if core.ring.Len() == 0 {
		if core.timer == nil {
			core.timer = time.NewTimer(d)
		} else {
			core.timer.Reset(d)
		}
		select {
		case <-core.timer.C:
		case <-core.wake:
			core.timer.Stop()
		}
	}
	core.sleeping.Store(false)
	return core.ring.Len() > 0
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

// runnerOf returns sq's engine instance of p, making it on the queue's
// first run.
func (s *computeState) runnerOf(p *loadedProgram, slot int, qid uint16) (*runner, completion, bool) {
	if int(qid) >= len(p.runners) {
		return nil, failDNR(nvme.ErrInvalidQueueID), false
	}
	if r := p.runners[qid].Load(); r != nil {
		return r, ok(), true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 1
	for i := range p.runners {
		if p.runners[i].Load() != nil {
			n++
		}
	}
	inst, err := p.exe.NewInstance(n, s.cfg.Budget)
	if err != nil {
		s.logLocked("slot %d: queue %d: %v", slot, qid, err)
		return nil, failDNR(nvme.ErrCapacityExceeded), false
	}
	r := &runner{inst: inst}
	p.runners[qid].Store(r)
	return r, ok(), true
}

// execProgram runs an Execute Program command of sq and returns its
// completion and the bytes the program ran over. It takes no lock: the
// program and the range set come from the published table, the program
// runs on the SQ's own engine instance.
func (c *Controller) execProgram(sq *sq, e *nvme.SQE) (completion, int) {
	s := c.compute()
	slot := int(e.CDW2 & 0xffff)
	rsid := uint16(e.CDW2 >> 16)
	tab := s.tab.Load()
	if slot >= len(tab.progs) {
		return failDNR(nvme.ErrInvalidProgramIndex), 0
	}
	p := tab.progs[slot]
	if p == nil {
		return failDNR(nvme.ErrProgramNotActive), 0
	}
	ranges, okSet := tab.rangeSets[rsid]
	if !okSet || len(ranges) < 2 {
		return failDNR(nvme.ErrInvalidRangeSet), 0
	}
	in, out := ranges[0], ranges[1]
	run, st, good := s.runnerOf(p, slot, sq.id)
	if !good {
		return st, 0
	}
	inMem, outMem := c.slmBytes(in), c.slmBytes(out)
	if inMem == nil || outMem == nil || len(outMem) < nvme.ExecResultSize {
		return failDNR(nvme.ErrInvalidRangeSet), 0
	}
	if e.CDW15&nvme.ExecFlagState != 0 {
		// The maps of every queue's instance, merged. (Read them once the
		// runs that update them have completed.)
		insts := make([]ProgramInstance, 0, len(p.runners))
		for i := range p.runners {
			if r := p.runners[i].Load(); r != nil {
				insts = append(insts, r.inst)
			}
		}
		enc := p.exe.MapState(insts)
		r := nvme.ExecResult{Count: uint32(len(enc))}
		if len(enc) > len(outMem)-nvme.ExecResultSize {
			r.Flags |= nvme.ExecOverflow
		} else {
			copy(outMem[nvme.ExecResultSize:], enc)
		}
		putExecResult(outMem, r)
		return ok(), 0
	}
	dlen := uint64(uint32(e.MPTR)) // DLEN: CDW4
	if dlen == 0 {
		dlen = uint64(in.Length)
	}
	if dlen > uint64(in.Length) {
		return failDNR(nvme.ErrInvalidField), 0
	}
	p1 := uint64(e.CDW10) | uint64(e.CDW11)<<32
	p2 := uint64(e.CDW12) | uint64(e.CDW13)<<32
	// The context lives in the queue's runner: passed to an interface, a
	// local would escape and cost an allocation per run.
	ctx := &run.ctx
	*ctx = ExecContext{Data: inMem[:dlen], LBA: p1, NSID: uint32(p2), BlockSize: uint32(p2 >> 32)}
	if bs := uint64(ctx.BlockSize); bs != 0 {
		if dlen%bs != 0 {
			return failDNR(nvme.ErrInvalidField), 0
		}
		ctx.BlockCount = uint32(dlen / bs)
	}
	capVals := (len(outMem) - nvme.ExecResultSize) / 8
	if cap(run.emit) < capVals {
		run.emit = make([]uint64, capVals)
	}
	emit := run.emit[:capVals]
	if hook := s.execHook.Load(); hook != nil {
		(*hook)()
	}
	res, err := run.inst.Run(ctx, emit)
	if err != nil {
		s.logf("slot %d: program fault over nsid %d LBA %d (%d bytes): %v", slot, ctx.NSID, ctx.LBA, dlen, err)
		return fail(nvme.ErrProgramFault), int(dlen)
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
	return completion{dw0: uint32(res.R0), dw1: uint32(res.R0 >> 32)}, int(dlen)
}
