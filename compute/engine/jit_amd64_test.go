//go:build linux && amd64

package engine

import (
	"bytes"
	"testing"

	"github.com/cilium/ebpf/asm"
	"github.com/pkg/errors"
	"golang.org/x/sys/unix"

	"github.com/bpfblk/bpfblk/compute/abi"
	"github.com/bpfblk/bpfblk/filters"
)

// TestJITWithoutExecMemory: where executable memory is refused, the JIT
// says so, and Compile(p, nil) runs the program on the interpreter instead.
func TestJITWithoutExecMemory(t *testing.T) {
	p, err := FromInstructions("t", abi.TypeRaw, asm.Instructions{asm.Mov.Imm(asm.R0, 42), asm.Return()})
	if err != nil {
		t.Fatal(err)
	}
	saved, savedDefault := jitProtect, defaultEngine
	defer func() { jitProtect, defaultEngine = saved, savedDefault }()
	jitProtect = func([]byte) error { return unix.EACCES }
	defaultEngine = JIT

	if _, err := Compile(p, JIT); !errors.Is(err, ErrNoExecMemory) {
		t.Fatalf("explicit JIT: got %v, want ErrNoExecMemory", err)
	}
	x, err := Compile(p, nil)
	if err != nil || x.Engine() != "interpreter" {
		t.Fatalf("default engine: %v, engine %q", err, x.Engine())
	}
	res, err := x.NewInstance().Run(&Context{Data: make([]byte, 8)}, nil)
	if err != nil || res.R0 != 42 {
		t.Fatalf("run: %v %v", res, err)
	}
	jitProtect = saved
	if x, err := Compile(p, nil); err != nil || x.Engine() != "jit" {
		t.Fatalf("with exec memory: %v", err)
	}
}

// TestJITCheckedOption: Program.Checked gives the JIT's checked access
// sequence (the region table lookup and two compares) to every load of the
// XDP pattern filter, whose loads are all proven and have none without it.
func TestJITCheckedOption(t *testing.T) {
	cs, err := filters.LoadPattern()
	if err != nil {
		t.Fatal(err)
	}
	p, err := LoadSpec(cs, &LoadOptions{Program: "pattern_xdp", Vars: map[string]any{"pattern": uint64(0x41), "pattern_len": uint32(1)}})
	if err != nil {
		t.Fatal(err)
	}
	code, err := compile(p.code, p.info, false)
	if err != nil {
		t.Fatal(err)
	}
	proven, _, err := jitTranslate(code, false)
	if err != nil {
		t.Fatal(err)
	}
	checked, _, err := jitTranslate(code, true)
	if err != nil {
		t.Fatal(err)
	}
	// The checked sequence compares the end of the access with the
	// region's size in the table: cmp r11, [r10+rcx+disp32].
	cmp := []byte{0x4d, 0x3b, 0x9c, 0x0a}
	if n := bytes.Count(proven, cmp); n != 0 {
		t.Fatalf("proven code has %d checked accesses", n)
	}
	if n := bytes.Count(checked, cmp); n < 3 {
		t.Fatalf("checked code has %d checked accesses, want the filter's 3", n)
	}
}

// TestJITEmitsCPUForms: with BMI2 and MOVBE the JIT emits SHLX/SHRX/SARX
// (VEX, opcode F7) and MOVBE (0F 38 F0) for the swap-and-shift program, and
// with the baseline neither.
func TestJITEmitsCPUForms(t *testing.T) {
	prog := asm.Instructions{
		asm.LoadMem(asm.R3, asm.R1, 0, asm.Word), asm.HostTo(asm.BE, asm.R3, asm.Word),
		asm.Mov.Reg(asm.R0, asm.R2), asm.LSh.Reg(asm.R0, asm.R3), asm.Return(),
	}
	p, err := FromInstructions("t", abi.TypeRaw, prog)
	if err != nil {
		t.Fatal(err)
	}
	code, err := compile(p.code, p.info, false)
	if err != nil {
		t.Fatal(err)
	}
	saved := jitCPU
	defer func() { jitCPU = saved }()
	for _, f := range []jitFeatures{{bmi2: true, movbe: true}, {}} {
		jitCPU = f
		mc, _, err := jitTranslate(code, false)
		if err != nil {
			t.Fatal(err)
		}
		hasMovbe := bytes.Contains(mc, []byte{0x0f, 0x38, 0xf0})
		hasShlx := bytes.Contains(mc, []byte{0xc4, 0xe2, 0xe9, 0xf7, 0xc0}) // shlx rax, rax, rdx
		if hasMovbe != f.movbe || hasShlx != f.bmi2 {
			t.Fatalf("features %+v: movbe %v, shlx %v in %x", f, hasMovbe, hasShlx, mc)
		}
	}
}
