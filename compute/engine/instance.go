package engine

import (
	"context"
	"encoding/binary"
	"io"
	"sync/atomic"

	"github.com/pkg/errors"

	"github.com/bpfblk/bpfblk/compute/abi"
)

// Engine is how host cores run a program: Interpreter (portable) or JIT
// (x86-64 machine code on linux/amd64); Default picks, EngineByName names.
// Pass one to Compile. Only this package implements it.
type Engine interface {
	// Name is "jit" or "interpreter".
	Name() string
	// build turns a verified program into runnable code.
	build(p *Program) (compiled, error)
}

// compiled is a program an engine built. Exec runs it on an instance whose
// registers and regions Run has prepared, and returns r0. It must not
// allocate.
type compiled interface {
	Exec(m *Instance) (uint64, error)
}

// DefaultBudget is the default per-run instruction budget. Loops are not
// proven bounded at load; instead the run pays for what it executes and
// stops with ErrBudget when its budget is spent: every taken backward jump
// charges the length of the jumped-over span (an upper bound of the
// instructions executed since the loop head), every local call charges the
// length of the callee (an upper bound of what it runs before its own loops
// and calls charge), and a helper charges one unit per 16 bytes it reads. The
// instructions a run executes are at most the units charged plus the length
// of the program (see RATIONALE.md, "Termination").
const DefaultBudget = 1 << 30

// budgetSlice is how much budget a run spends between two returns of
// control to Exec's Go loop, where an interruption (SetInterrupt,
// SetContext) is noticed
// and, for the JIT, the Go scheduler and a stop-the-world get their chance.
// A unit is at most one instruction plus bounded slack, ~0.3-1 ns in the
// JIT, so a slice takes tens of microseconds and at worst (loads that miss
// every cache) about a millisecond.
const budgetSlice = 1 << 16

// ErrInterrupted is returned (wrapped with the instruction or block) when a
// run stops because its interrupt flag was set (SetInterrupt) or its context
// is done (SetContext).
var ErrInterrupted = errors.New("run interrupted")

// Executable is a program compiled by an engine, ready to instantiate.
type Executable struct {
	prog   *Program
	code   compiled
	engine string
	// shared holds the read-only maps, which every instance shares (nil
	// for writable maps): they cannot change after load.
	shared []*mapInst
}

// Compile compiles a verified program with e. A nil e means Default(); if
// that is the JIT and this process may not map executable memory (a
// hardened kernel, a sandbox), the interpreter takes its place.
func Compile(p *Program, e Engine) (*Executable, error) {
	fallback := e == nil
	if e == nil {
		e = Default()
	}
	c, err := e.build(p)
	if err != nil && fallback && e != Interpreter && errors.Is(err, ErrNoExecMemory) {
		e = Interpreter
		c, err = e.build(p)
	}
	if err != nil {
		return nil, errors.Wrapf(err, "compile %s with %s", p.Name, e.Name())
	}
	x := &Executable{prog: p, code: c, engine: e.Name(), shared: make([]*mapInst, len(p.Maps))}
	for i := range p.Maps {
		if p.Maps[i].ReadOnly {
			x.shared[i] = newMapInst(&p.Maps[i], i)
			x.shared[i].shared = true
		}
	}
	return x, nil
}

// ErrNoExecMemory is returned (wrapped) by the JIT when the process cannot
// map memory for machine code or make it executable.
var ErrNoExecMemory = errors.New("no executable memory for JIT code")

// Engine returns the name of the engine the executable was compiled with.
func (x *Executable) Engine() string { return x.engine }

// Program returns the program this was compiled from.
func (x *Executable) Program() *Program { return x.prog }

// Instance is one core's runnable copy of a program: its own stack, context
// buffer and writable maps (read-only maps are shared with the other
// instances of its Executable). An instance is not safe for concurrent use; create
// one per core and merge their maps with MergeMaps at the end.
type Instance struct {
	regs        [16]uint64
	regions     [maxRegions]region
	exe         *Executable
	code        compiled
	typ         abi.Type
	stack       []byte
	ctx         []byte
	maps        []*mapInst
	frames      [abi.MaxFrames]frame
	data        []byte
	emit        []uint64
	nemit       int
	overflow    bool
	dropped     int
	budget      int64 // left in the current slice; the JIT reads and writes it
	remaining   int64 // budget of this run not yet handed to a slice
	budgetLimit int64
	stop        *atomic.Bool
	done        <-chan struct{}
	sliceAt     int // interpreter: the instruction that spent the slice
	sliceResume int // interpreter: where the next slice starts
	depth       int
	trace       io.Writer
	jit         jitExit
}

// jitExit is how JIT code tells Exec why it returned.
type jitExit struct {
	info   uint64  // exit kind | fault size<<8 | fault write<<16 | slot<<32
	addr   uint64  // fault address, or helper id
	resume uintptr // code address to continue at
	spill  [2]uint64
	bp     uintptr // Go's frame pointer while the code keeps the budget in rbp
}

// NewInstance creates a fresh instance with its own copy of every writable
// map; read-only maps are shared by all instances of x. Loading checked that
// one instance fits the program's map memory limit; a caller that creates
// several checks their number first with Program.CheckInstances.
func (x *Executable) NewInstance() *Instance {
	p := x.prog
	m := &Instance{
		exe:         x,
		code:        x.code,
		typ:         p.Type,
		stack:       make([]byte, abi.StackSize*abi.MaxFrames),
		budgetLimit: DefaultBudget,
	}
	if p.Type == abi.TypeXDP {
		m.ctx = make([]byte, abi.XDPCtxSize)
	} else {
		m.ctx = make([]byte, abi.CtxSize)
	}
	m.regions[regionStack].set(regionStack, m.stack, true)
	m.regions[regionCtx].set(regionCtx, m.ctx, false)
	for i := range p.Maps {
		mi := x.shared[i]
		if mi == nil {
			mi = newMapInst(&p.Maps[i], i)
		}
		m.maps = append(m.maps, mi)
		m.regions[regionMap0+i].set(regionMap0+i, mi.values, !p.Maps[i].ReadOnly)
	}
	return m
}

// SetBudget sets the per-run instruction budget (see DefaultBudget).
func (m *Instance) SetBudget(n int64) { m.budgetLimit = n }

// SetInterrupt makes runs of this instance stop with ErrInterrupted soon
// after *stop becomes true (nil: never): at the latest after one budget
// slice, a millisecond or so of work, whatever the program does, and before
// each block of a per-block filter. The flag is only read, so one flag can
// serve every instance of a scan; set it from any goroutine, for example
// when a context is cancelled.
func (m *Instance) SetInterrupt(stop *atomic.Bool) { m.stop = stop }

// SetContext makes runs of this instance stop with ErrInterrupted soon
// after ctx is done, as SetInterrupt does for a flag (both may be set). Only
// ctx.Done() is kept: a cancellation reaches a running program without any
// other goroutine having to run, which matters when programs occupy every
// core.
func (m *Instance) SetContext(ctx context.Context) { m.done = ctx.Done() }

// interrupted reports whether the interrupt flag is set or the context done.
func (m *Instance) interrupted() bool {
	if m.stop != nil && m.stop.Load() {
		return true
	}
	if m.done == nil { // no context: spare the select, once per block
		return false
	}
	select {
	case <-m.done: // a nil channel (no context) is never ready
		return true
	default:
		return false
	}
}

// refill is called when the current slice's budget went negative at
// instruction pc: it ends the run with ErrBudget if the run's budget is
// spent too, or with ErrInterrupted if the run is interrupted, and
// otherwise hands out the next slice. It is not inlined and calls other
// functions, so it has a stack-growth check through which the Go runtime
// preempts a run of JIT code that it asked to stop (a stop-the-world, a
// goroutine that ran for too long).
//
//go:noinline
func (m *Instance) refill(pc int) error {
	total := m.remaining + m.budget
	if total < 0 {
		m.budget, m.remaining = total, 0
		return errors.Wrapf(ErrBudget, "engine: instruction %d: limit %d", pc, m.budgetLimit)
	}
	if m.interrupted() {
		return errors.Wrapf(ErrInterrupted, "engine: instruction %d", pc)
	}
	give := min(total, budgetSlice)
	m.budget, m.remaining = give, total-give
	return nil
}

// SetTrace sets where bpf_trace_printk output goes (nil discards it).
func (m *Instance) SetTrace(w io.Writer) { m.trace = w }

// ResetMaps restores every writable map of this instance to its initial
// contents (read-only maps never change).
func (m *Instance) ResetMaps() {
	for _, mi := range m.maps {
		if !mi.shared {
			mi.reset()
		}
	}
}

// Maps returns a snapshot of this instance's maps (including read-only ones).
func (m *Instance) Maps() []MapData {
	out := make([]MapData, 0, len(m.maps))
	for _, mi := range m.maps {
		out = append(out, mi.snapshot())
	}
	return out
}

// Context describes the data a run sees.
type Context struct {
	// Data is the chunk: BlockCount blocks of BlockSize bytes. The engine
	// never writes it, except for raw and XDP programs, whose ABI allows it.
	Data       []byte
	LBA        uint64 // LBA of the first block
	NSID       uint32
	BlockSize  uint32 // 0 means len(Data)
	BlockCount uint32 // 0 means len(Data)/BlockSize
	// Overlap is how many bytes past each block's end a per-block filter's
	// run sees, where Data has them: its data_end lies up to Overlap bytes
	// into what follows, so that a pattern straddling two blocks is found
	// at the block where it starts. A scanner sees all of Data.
	Overlap uint32
	// Data may end inside the last block (a short block, such as the tail
	// of a file): that block's run sees only the bytes Data holds.
}

// Result is what a run produced.
type Result struct {
	// R0 is the program's return value. For a per-block filter it is the
	// number of matching blocks.
	R0 uint64
	// Emitted is the number of values written to the emit buffer.
	Emitted int
	// Overflow is set when the program emitted more values than the buffer
	// holds; bpfblk_emit returned -ENOSPC for those.
	Overflow bool
	// Dropped is the number of values bpfblk_emit refused for want of room.
	Dropped int
}

// Run runs the program on ctx and writes emitted values (matching LBAs of a
// filter, whatever a scanner emits) to emit. It allocates nothing.
//
// A per-block filter (abi.TypeFilter) runs once per block with block_count 1
// and a block whose run returns non-zero is a match: its LBA is emitted. Every
// other type runs once over the whole chunk. A raw program gets r1 = data and
// r2 = len(data).
func (m *Instance) Run(ctx *Context, emit []uint64) (Result, error) {
	m.emit, m.nemit, m.overflow, m.dropped = emit, 0, false, 0
	bs := ctx.BlockSize
	if bs == 0 {
		bs = uint32(len(ctx.Data))
	}
	count := ctx.BlockCount
	if count == 0 && bs != 0 {
		count = uint32(len(ctx.Data)) / bs
	}
	// The last block may be short, but not empty.
	if count > 0 && uint64(bs)*uint64(count-1) >= uint64(len(ctx.Data)) {
		return Result{}, errors.Errorf("engine: %d blocks of %d bytes do not fit in %d bytes of data", count, bs, len(ctx.Data))
	}
	if len(ctx.Data) > 1<<31 {
		return Result{}, errors.Errorf("engine: data of %d bytes is larger than 2 GiB", len(ctx.Data))
	}
	var res Result
	if m.interrupted() {
		return res, errors.Wrapf(ErrInterrupted, "engine: before LBA %d", ctx.LBA)
	}
	if m.typ == abi.TypeFilter {
		matches := uint64(0)
		for b := uint32(0); b < count; b++ {
			if b > 0 && m.interrupted() {
				return res, errors.Wrapf(ErrInterrupted, "engine: before block %d (LBA %d)", b, ctx.LBA+uint64(b))
			}
			d := ctx.Data[uint64(b)*uint64(bs) : min(uint64(b+1)*uint64(bs)+uint64(ctx.Overlap), uint64(len(ctx.Data)))]
			r0, err := m.runOnce(d, ctx.LBA+uint64(b), ctx.NSID, bs, 1)
			if err != nil {
				return res, errors.Wrapf(err, "block %d (LBA %d)", b, ctx.LBA+uint64(b))
			}
			if r0 != 0 {
				matches++
				m.emitValue(ctx.LBA + uint64(b))
			}
		}
		res.R0 = matches
	} else {
		r0, err := m.runOnce(ctx.Data, ctx.LBA, ctx.NSID, bs, count)
		if err != nil {
			return res, err
		}
		res.R0 = r0
	}
	res.Emitted, res.Overflow, res.Dropped = m.nemit, m.overflow, m.dropped
	m.emit, m.data = nil, nil
	m.regions[regionData] = region{}
	return res, nil
}

func (m *Instance) runOnce(data []byte, lba uint64, nsid, bs, count uint32) (uint64, error) {
	m.data = data
	m.regions[regionData].set(regionData, data, m.typ == abi.TypeRaw || m.typ == abi.TypeXDP)
	m.regs = [16]uint64{}
	m.regs[10] = regionAddr(regionStack, uint64(len(m.stack)))
	dataAddr := regionAddr(regionData, 0)
	endAddr := regionAddr(regionData, uint64(len(data)))
	switch m.typ {
	case abi.TypeRaw:
		m.regs[1] = dataAddr
		m.regs[2] = uint64(len(data))
	case abi.TypeXDP:
		c := m.ctx
		clear(c)
		binary.LittleEndian.PutUint32(c[abi.XDPData:], uint32(dataAddr))
		binary.LittleEndian.PutUint32(c[abi.XDPDataEnd:], uint32(endAddr))
		binary.LittleEndian.PutUint32(c[abi.XDPDataMeta:], uint32(dataAddr))
		m.regs[1] = regionAddr(regionCtx, 0)
	default:
		c := m.ctx
		binary.LittleEndian.PutUint64(c[abi.CtxData:], dataAddr)
		binary.LittleEndian.PutUint64(c[abi.CtxDataEnd:], endAddr)
		binary.LittleEndian.PutUint64(c[abi.CtxLBA:], lba)
		binary.LittleEndian.PutUint32(c[abi.CtxNSID:], nsid)
		binary.LittleEndian.PutUint32(c[abi.CtxBlockSize:], bs)
		binary.LittleEndian.PutUint32(c[abi.CtxBlockCount:], count)
		binary.LittleEndian.PutUint32(c[abi.CtxReserved:], 0)
		m.regs[1] = regionAddr(regionCtx, 0)
	}
	m.budget = min(m.budgetLimit, budgetSlice)
	m.remaining = m.budgetLimit - m.budget
	return m.code.Exec(m)
}

func (m *Instance) emitValue(v uint64) int64 {
	if m.nemit >= len(m.emit) {
		m.overflow = true
		m.dropped++
		return -abi.ENOSPC
	}
	m.emit[m.nemit] = v
	m.nemit++
	return 0
}

// Regs returns the registers as the last run left them (for tests and tools).
func (m *Instance) Regs() [11]uint64 {
	var r [11]uint64
	copy(r[:], m.regs[:11])
	return r
}
