// Package verifier checks eBPF programs before the engine runs them: encodings,
// control flow, register and stack initialisation, pointer provenance, bounds of
// context, stack, map-value and data accesses, and helper-call signatures.
//
// The verifier is a path-sensitive abstract interpreter, like Linux's: a
// worklist explores the states reaching each instruction, per call context
// (so that bpf-to-bpf calls are analysed with their own frames), without
// joining them, so a bounded loop is verified iteration by iteration. States
// that differ only in dead registers count once (a liveness pass clears
// them), and identical states are explored once. Only after PrecisePerInsn
// distinct states at one instruction are further states joined into one and,
// after a few joins, widened, so that unbounded loops converge too. It does
// not try to prove loops bounded: termination is the engine's job (a per-run
// instruction budget, see package engine). Helper calls are checked by the
// argument kinds of compute/abi's helper table. compute/engine's RATIONALE.md
// ("Verifier") explains the choices.
package verifier

import (
	"fmt"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfblk/bpfblk/compute/internal/layout"
)

// MapKind is the storage layout of a map.
type MapKind uint8

// Map kinds.
const (
	MapArray MapKind = iota + 1
	MapHash
)

// Map describes a map a program refers to.
type Map struct {
	Name       string
	Kind       MapKind
	KeySize    uint32
	ValueSize  uint32
	MaxEntries uint32
	// ReadOnly maps (.rodata) reject stores through value pointers.
	ReadOnly bool
}

// code is the program being verified: its instructions laid out by slot
// and the maps they refer to.
type code struct {
	*layout.Code
	Maps []Map
}

// Error is a rejection: the slot index of the offending instruction, its
// disassembly, its C source line when the program carries line info (BTF),
// and the reason.
type Error struct {
	Index  int    // instruction slot (jump offsets count in slots)
	Insn   string // disassembled instruction
	Reason string
	// File, Line and Source are the C source of the instruction: the file
	// and line number as compiled, and the line's text ("" without line
	// info).
	File   string
	Line   int
	Source string
	// Log is the verifier's log of the path to the rejection (only with
	// Options.Log): one instruction a line with the register state before
	// it, "from X to Y:" where the path continues from a branch, source
	// lines as "; text @ file:line" comments, and the rejection last.
	Log string
}

// Error formats the rejection on one line: "verifier: file.c:12:
// instruction 5 (insn): reason (source: the C line)".
func (e *Error) Error() string {
	if e.Index < 0 {
		return "verifier: " + e.Reason
	}
	msg := fmt.Sprintf("verifier: %sinstruction %d (%s): %s", e.location(), e.Index, e.Insn, e.Reason)
	if e.Source != "" {
		msg += " (source: " + e.Source + ")"
	}
	return msg
}

func (c *code) reject(pc int, format string, args ...any) *Error {
	e := &Error{Index: pc, Reason: fmt.Sprintf(format, args...)}
	if pc >= 0 && pc < len(c.Insns) {
		e.Insn = Disasm(c.Insns[pc])
		if src, ok := sourceOf(c, pc); ok {
			e.File, e.Line, e.Source = src.file, src.line, src.text
		}
	}
	return e
}

// Disasm formats one instruction the way cilium/ebpf's asm package does.
func Disasm(ins asm.Instruction) string {
	return fmt.Sprintf("%v", ins)
}
