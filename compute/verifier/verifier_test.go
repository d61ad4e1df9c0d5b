package verifier

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfblk/bpfblk/compute/internal/layout"
)

func TestRefineRange(t *testing.T) {
	v := scalar(0, 100)
	cases := []struct {
		op     asm.JumpOp
		k      uint64
		lo, hi uint64
		ok     bool
	}{
		{asm.JGT, 10, 11, 100, true},
		{asm.JGE, 10, 10, 100, true},
		{asm.JLT, 10, 0, 9, true},
		{asm.JLE, 10, 0, 10, true},
		{asm.JEq, 50, 50, 50, true},
		{asm.JEq, 500, 0, 0, false},
		{asm.JGT, 100, 0, 0, false},
		{asm.JLT, 0, 0, 0, false},
		{asm.JNE, 0, 1, 100, true},
	}
	for _, c := range cases {
		r, ok := refineRange(v, c.op, c.k)
		if ok != c.ok || ok && (r.min != c.lo || r.max != c.hi) {
			t.Errorf("%v %d: got [%d,%d] %v", c.op, c.k, r.min, r.max, ok)
		}
	}
}

func TestJoinKeepsProvenBytes(t *testing.T) {
	a := value{k: kData, off: 4, rng: 12, id: 7}
	b := value{k: kData, off: 5, rng: 13, id: 7}
	j := joinValue(a, b, -1)
	// Both pointers had 8 readable bytes; so does the join.
	if j.k != kData || j.rng-j.off < 8 || j.min != 0 || j.max != 1 {
		t.Fatalf("join %+v", j)
	}
	if w := widen(j, joinValue(j, value{k: kData, off: 9, rng: 17, id: 7}, -1)); w.max != unbounded {
		t.Fatalf("widen %+v", w)
	}
	if m := joinValue(constant(1), value{k: kStack}, -1); m.k != kMixed {
		t.Fatalf("scalar and pointer joined to %v", m.k)
	}
	if n := joinValue(constant(0), value{k: kMapVal, idx: 1}, -1); n.k != kMapValOrNull {
		t.Fatalf("NULL and map value joined to %v", n.k)
	}
}

func TestLiveness(t *testing.T) {
	c := &code{Code: layout.New(asm.Instructions{
		asm.Mov.Imm(asm.R3, 1),      // 0: r3 dead after (overwritten at 1)
		asm.Mov.Imm(asm.R3, 2),      // 1
		asm.Mov.Reg(asm.R0, asm.R3), // 2: reads r3
		asm.Return(),                // 3: reads r0
	}, nil)}
	live := c.liveness()
	if live[1]&(1<<3) != 0 || live[2]&(1<<3) == 0 || live[3] != 1 {
		t.Fatalf("liveness %v", live)
	}
}

// TestCanonicalAtomics: an atomic built with cilium/ebpf/asm gets its
// operation in the immediate; a decoded one keeps the immediate it had,
// reserved bits and all; the input is not modified.
func TestCanonicalAtomics(t *testing.T) {
	in := asm.Instructions{
		asm.Xchg.Mem(asm.RFP, asm.R1, asm.DWord, -8),
		asm.AddAtomic.Mem(asm.RFP, asm.R1, asm.Word, -8),
		asm.Mov.Imm(asm.R0, 0),
	}
	var raw bytes.Buffer
	bad := asm.Instructions{{OpCode: asm.OpCode(asm.StXClass).SetMode(asm.AtomicMode).SetSize(asm.DWord), Dst: asm.RFP, Src: asm.R1, Offset: -8, Constant: 0x10e1}}
	if err := bad.Marshal(&raw, binary.LittleEndian); err != nil {
		t.Fatal(err)
	}
	decoded, err := asm.AppendInstructions(nil, &raw, binary.LittleEndian, "linux")
	if err != nil {
		t.Fatal(err)
	}
	out := CanonicalAtomics(append(in, decoded...))
	if out[0].Constant != 0xe1 || out[1].Constant != 0 || out[2].Constant != 0 || out[3].Constant != 0x10e1 {
		t.Fatalf("immediates %#x %#x %#x %#x", out[0].Constant, out[1].Constant, out[2].Constant, out[3].Constant)
	}
	if in[0].Constant != 0 {
		t.Fatal("input modified")
	}
}
