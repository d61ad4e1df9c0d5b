package verifier

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfblk/bpfblk/compute/abi"
	"github.com/bpfblk/bpfblk/compute/internal/layout"
)

// Options tune Verify.
type Options struct {
	// Log asks for the verifier's log of a rejection (Error.Log): the
	// instructions on the path that led to the rejected one, each with the
	// register state the verifier had before it, in the manner of the Linux
	// verifier's log. Without it nothing is recorded.
	Log bool
	// LogSteps bounds the log: the verifier keeps the state of its last
	// LogSteps steps (0 means DefaultLogSteps), so a path longer than that
	// shows only its end.
	LogSteps int
}

// DefaultLogSteps is the number of verification steps Options.Log keeps.
const DefaultLogSteps = 1024

// trail is a ring of the last verification steps with the register state
// before each and the step its state came from, so that the path to a
// rejection can be walked back. It allocates once; recording a step copies
// the registers.
type trail struct {
	ring []trailStep
	n    uint64 // steps recorded; step ids are 1..n
}

type trailStep struct {
	id     uint64
	parent uint64 // the step whose successor this is; 0 for the entry
	pc     int
	depth  int // call frames
	regs   [11]value
}

func newTrail(steps int) *trail {
	if steps <= 0 {
		steps = DefaultLogSteps
	}
	return &trail{ring: make([]trailStep, steps)}
}

// record keeps the state before executing it and returns the step's id.
func (t *trail) record(it *workItem) uint64 {
	t.n++
	e := &t.ring[t.n%uint64(len(t.ring))]
	*e = trailStep{id: t.n, parent: it.parent, pc: it.k.pc, depth: len(it.s.frames), regs: it.s.regs}
	return t.n
}

// get returns the step with id, if still kept.
func (t *trail) get(id uint64) *trailStep {
	if id == 0 || id > t.n || t.n-id >= uint64(len(t.ring)) {
		return nil
	}
	return &t.ring[id%uint64(len(t.ring))]
}

// path returns the steps that led to step id, oldest first, and whether
// the path reaches the program's entry (else older steps were dropped).
func (t *trail) path(id uint64) ([]*trailStep, bool) {
	var out []*trailStep
	for s := t.get(id); s != nil; s = t.get(s.parent) {
		out = append(out, s)
		if s.parent == 0 {
			for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
				out[i], out[j] = out[j], out[i]
			}
			return out, true
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, false
}

// log formats the path to step id and the rejection e.
func (t *trail) log(c *code, id uint64, e *Error) string {
	steps, whole := t.path(id)
	var b strings.Builder
	if !whole {
		fmt.Fprintf(&b, "... (earlier instructions of the path are not kept; Options.LogSteps is %d)\n", len(t.ring))
	}
	lastSrc := ""
	prev := -1
	for i, s := range steps {
		if i == 0 || !follows(c, prev, s.pc) {
			from := "entry"
			if i > 0 || !whole {
				from = strconv.Itoa(prev)
			}
			if i == 0 && !whole {
				from = "?"
			}
			fmt.Fprintf(&b, "from %s to %d:%s\n", from, s.pc, regString(c, &s.regs, s.depth))
		}
		if src, ok := sourceOf(c, s.pc); ok && src.text != lastSrc {
			fmt.Fprintf(&b, "; %s @ %s:%d\n", src.text, src.file, src.line)
			lastSrc = src.text
		}
		fmt.Fprintf(&b, "%d: %v", s.pc, c.Insns[s.pc])
		if i+1 < len(steps) && follows(c, s.pc, steps[i+1].pc) {
			fmt.Fprintf(&b, "\t;%s", regString(c, &steps[i+1].regs, steps[i+1].depth))
		}
		b.WriteByte('\n')
		prev = s.pc
	}
	fmt.Fprintf(&b, "%d: %s\n", e.Index, e.Reason)
	return b.String()
}

// follows reports whether pc is the fall-through successor of prev (a
// continuation the kernel's log does not announce with "from ... to").
func follows(c *code, prev, pc int) bool {
	if prev < 0 || prev >= len(c.Insns) {
		return false
	}
	next := prev + 1
	if c.Insns[prev].OpCode.IsDWordLoad() {
		next = prev + 2
	}
	return pc == next
}

// regString formats the initialised registers as the kernel's log does:
// " R1=ctx() R2=scalar(umin=0,umax=255) R10=fp0".
func regString(c *code, regs *[11]value, depth int) string {
	var b strings.Builder
	if depth > 1 {
		fmt.Fprintf(&b, " frame%d:", depth-1)
	}
	for r, v := range regs {
		if v.k == kUninit {
			continue
		}
		fmt.Fprintf(&b, " R%d=%s", r, valueString(c, v))
	}
	return b.String()
}

func rangeString(min, max uint64) string {
	if max == unbounded {
		if min == 0 {
			return ""
		}
		return fmt.Sprintf("umin=%d", min)
	}
	return fmt.Sprintf("umin=%d,umax=%d", min, max)
}

func valueString(c *code, v value) string {
	varPart := ""
	if v.isPtr() && (v.min != 0 || v.max != 0) {
		varPart = "var=(" + rangeString(v.min, v.max) + ")"
		if v.max == unbounded && v.min == 0 {
			varPart = "var=()"
		}
	}
	join := func(parts ...string) string {
		var kept []string
		for _, p := range parts {
			if p != "" {
				kept = append(kept, p)
			}
		}
		return strings.Join(kept, ",")
	}
	off := func() string {
		if v.off == 0 {
			return ""
		}
		return "off=" + strconv.FormatInt(v.off, 10)
	}
	mapName := func() string {
		if v.idx >= 0 && int(v.idx) < len(c.Maps) {
			return "map=" + c.Maps[v.idx].Name
		}
		return ""
	}
	switch v.k {
	case kScalar:
		if v.isConst() {
			return strconv.FormatUint(v.min, 10)
		}
		return "scalar(" + rangeString(v.min, v.max) + ")"
	case kCtx:
		return "ctx(" + join(off(), varPart) + ")"
	case kData:
		return "pkt(" + join(off(), varPart, "r="+strconv.FormatInt(v.rng, 10)) + ")"
	case kDataEnd:
		return "pkt_end(" + join(off()) + ")"
	case kStack:
		frame := ""
		if v.idx > 0 {
			frame = "frame" + strconv.Itoa(int(v.idx)) + ":"
		}
		if varPart != "" {
			return frame + "fp(" + join(off(), varPart) + ")"
		}
		return frame + "fp" + strconv.FormatInt(v.off, 10)
	case kMapVal:
		return "map_value(" + join(mapName(), off(), varPart) + ")"
	case kMapValOrNull:
		return "map_value_or_null(" + join(mapName(), off(), varPart) + ")"
	case kMapPtr:
		return "map_ptr(" + mapName() + ")"
	case kMixed:
		return "mixed"
	}
	return v.k.String()
}

// source is the C source line of an instruction.
type source struct {
	file, text string
	line       int
}

// sourceOf finds the line info of the instruction at slot pc: the nearest
// instruction at or before it, within its function, that carries one
// (compilers attach a line to the first instruction of each line only).
func sourceOf(c *code, pc int) (source, bool) {
	if pc < 0 || pc >= len(c.Insns) {
		return source{}, false
	}
	for i := pc; i >= 0 && pc-i < 4096; i-- {
		ins := &c.Insns[i]
		if l, ok := ins.Source().(*btf.Line); ok && l != nil && l.LineNumber() != 0 {
			return source{file: l.FileName(), text: strings.TrimSpace(l.Line()), line: int(l.LineNumber())}, true
		}
		if ins.Symbol() != "" && !c.Half[i] {
			break // the function's first instruction
		}
	}
	return source{}, false
}

// VerifyWith is Verify with options (nil: as Verify).
func VerifyWith(insns asm.Instructions, maps []Map, mapRef func(i int) int, typ abi.Type, o *Options) (*Info, error) {
	var t *trail
	if o != nil && o.Log {
		t = newTrail(o.LogSteps)
	}
	return verify(&code{Code: layout.New(insns, mapRef), Maps: maps}, typ, t)
}

// location is "file:line: " of the rejected instruction's C source, in the
// manner of a compiler's message, or "".
func (e *Error) location() string {
	if e.File == "" {
		return ""
	}
	return fmt.Sprintf("%s:%d: ", e.File, e.Line)
}
