package engine_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfblk/bpfblk/compute/abi"
	"github.com/bpfblk/bpfblk/compute/engine"
)

func needJIT(t testing.TB) {
	t.Helper()
	p, _ := engine.FromInstructions("probe", abi.TypeRaw, asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()})
	if _, err := engine.Compile(p, engine.JIT); err != nil {
		t.Skipf("no JIT here: %v", err)
	}
}

// outcome is everything observable about one run.
type outcome struct {
	r0      uint64
	err     string
	data    []byte
	regs    [11]uint64
	emitted []uint64
}

func (o outcome) String() string {
	return fmt.Sprintf("r0 %#x err %q regs %#x emitted %v data %x", o.r0, o.err, o.regs, o.emitted, o.data)
}

func runWith(t testing.TB, e engine.Engine, p *engine.Program, data []byte, bs uint32, budget int64) outcome {
	t.Helper()
	x, err := engine.Compile(p, e)
	if err != nil {
		t.Fatalf("%s: verified program does not compile: %v", e.Name(), err)
	}
	inst := x.NewInstance()
	inst.SetBudget(budget)
	d := bytes.Clone(data)
	emit := make([]uint64, 8)
	res, err := inst.Run(&engine.Context{Data: d, BlockSize: bs, LBA: 1000, NSID: 3}, emit)
	o := outcome{r0: res.R0, data: d, regs: inst.Regs(), emitted: emit[:res.Emitted]}
	if err != nil {
		o.err = err.Error()
	}
	return o
}

// agree runs p on both engines and fails if anything observable differs:
// return value, error text (fault instruction, address and size, or the
// budget), final registers, data and emitted values.
func agree(t testing.TB, p *engine.Program, data []byte, bs uint32, budget int64, what string) {
	t.Helper()
	j := runWith(t, engine.JIT, p, data, bs, budget) // proven accesses unchecked
	i := runWith(t, engine.Interpreter, p, data, bs, budget)
	if j.String() != i.String() {
		t.Fatalf("%s: engines differ\njit:         %v\ninterpreter: %v\nprogram:\n%v", what, j, i, p.Insns)
	}
	q := *p
	q.Checked = true
	if c := runWith(t, engine.JIT, &q, data, bs, budget); c.String() != j.String() {
		t.Fatalf("%s: JIT with every access checked differs\nchecked: %v\nproven:  %v\nprogram:\n%v", what, c, j, p.Insns)
	}
}

// TestJITMatchesInterpreter compares the two engines on generated programs
// (every ALU, jump, load, store and atomic form) and on mutations of them:
// flipped bytes that still verify give wild programs, faults and loops.
func TestJITMatchesInterpreter(t *testing.T) {
	needJIT(t)
	rng := rand.New(rand.NewPCG(9, 9))
	mutants := 0
	for i, s := range seedInputs(150) {
		prog := genProgram(s)
		p, err := engine.FromInstructions("gen", abi.TypeXDP, prog)
		if err != nil {
			t.Fatalf("seed %d: %v", i, err)
		}
		agree(t, p, genData(s), 0, 1<<20, fmt.Sprintf("seed %d", i))

		var raw bytes.Buffer
		if err := prog.Marshal(&raw, binary.LittleEndian); err != nil {
			t.Fatal(err)
		}
		for k := 0; k < 20; k++ {
			b := bytes.Clone(raw.Bytes())
			for n := 0; n < 1+rng.IntN(3); n++ {
				b[rng.IntN(len(b))] ^= byte(1 << rng.IntN(8))
			}
			for _, typ := range []abi.Type{abi.TypeXDP, abi.TypeRaw} {
				p, err := engine.FromBytes("mutant", typ, b)
				if err != nil {
					continue
				}
				mutants++
				agree(t, p, genData(s), 0, 1<<16, fmt.Sprintf("seed %d mutant %d (%v)", i, k, typ))
			}
		}
	}
	t.Logf("%d verified mutants compared", mutants)
	if mutants < 100 {
		t.Fatalf("only %d mutants verified: the mutation test lost its teeth", mutants)
	}
}

// FuzzJITVsInterpreter feeds arbitrary instruction bytes to the verifier and
// runs whatever it accepts on both engines.
func FuzzJITVsInterpreter(f *testing.F) {
	for _, s := range seedInputs(20) {
		var raw bytes.Buffer
		if err := genProgram(s).Marshal(&raw, binary.LittleEndian); err == nil {
			f.Add(raw.Bytes())
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		needJIT(t)
		if len(b) > 8*4096 {
			return
		}
		data := genData(b)
		for _, typ := range []abi.Type{abi.TypeRaw, abi.TypeXDP, abi.TypeFilter, abi.TypeScan} {
			p, err := engine.FromBytes("fuzz", typ, b)
			if err != nil {
				continue
			}
			agree(t, p, data, 64, 1<<16, typ.String())
		}
	})
}

// TestJITBudget: a loop of n iterations needs exactly 2(n-1) budget; one less
// stops with ErrBudget at the loop's jump on both engines, also when the
// budget is far larger than the JIT's slice between returns to Go.
func TestJITBudget(t *testing.T) {
	needJIT(t)
	for _, n := range []int32{10, 3 << 21} {
		prog := asm.Instructions{
			asm.Mov.Imm(asm.R0, 0),
			asm.Add.Imm(asm.R0, 1).WithSymbol("loop"),
			asm.JLT.Imm(asm.R0, n, "loop"),
			asm.Return(),
		}
		p, err := engine.FromInstructions("loop", abi.TypeRaw, prog)
		if err != nil {
			t.Fatal(err)
		}
		need := 2 * int64(n-1)
		for _, e := range []engine.Engine{engine.JIT, engine.Interpreter} {
			ok := runWith(t, e, p, make([]byte, 8), 0, need)
			if ok.err != "" || ok.r0 != uint64(n) {
				t.Fatalf("%s, n %d, budget %d: %v", e.Name(), n, need, ok)
			}
			short := runWith(t, e, p, make([]byte, 8), 0, need-1)
			if short.err != fmt.Sprintf("engine: instruction 2: limit %d: %v", need-1, engine.ErrBudget) {
				t.Fatalf("%s, n %d, budget %d: %v", e.Name(), n, need-1, short)
			}
		}
	}
}

// TestJITHelpersInCalls: a helper called from a bpf-to-bpf callee returns
// into the callee's frame, and the caller's r6-r9 and stack survive.
func TestJITHelpersInCalls(t *testing.T) {
	needJIT(t)
	prog := asm.Instructions{
		asm.Mov.Imm(asm.R6, 11),
		asm.Mov.Imm(asm.R2, 5),
		asm.StoreMem(asm.RFP, -8, asm.R2, asm.DWord),
		asm.Call.Label("f"), // r1 = ctx
		asm.LoadMem(asm.R1, asm.RFP, -8, asm.DWord),
		asm.Add.Reg(asm.R0, asm.R1),
		asm.Add.Reg(asm.R0, asm.R6), // 7 + 5 + 11
		asm.Return(),
		asm.Mov.Reg(asm.R6, asm.R1).WithSymbol("f"),
		asm.Mov.Imm(asm.R2, 99),
		asm.StoreMem(asm.RFP, -8, asm.R2, asm.DWord),
		asm.Mov.Imm(asm.R2, 42),
		asm.BuiltinFunc(abi.HelperEmit).Call(),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadMem(asm.R2, asm.RFP, -8, asm.DWord),
		asm.BuiltinFunc(abi.HelperEmit).Call(),
		asm.Mov.Imm(asm.R0, 7),
		asm.Return(),
	}
	p, err := engine.FromInstructions("calls", abi.TypeScan, prog)
	if err != nil {
		t.Fatal(err)
	}
	o := runWith(t, engine.JIT, p, make([]byte, 512), 512, 1<<20)
	if o.err != "" || o.r0 != 23 || fmt.Sprint(o.emitted) != "[42 99]" {
		t.Fatalf("got %v", o)
	}
	agree(t, p, make([]byte, 512), 512, 1<<20, "helpers in calls")
}

// TestJITConcurrentWithGC runs JIT code on several goroutines while the
// collector runs: the code, its instance memory and the Go stack it was
// called from must survive collections and stack moves.
func TestJITConcurrentWithGC(t *testing.T) {
	needJIT(t)
	data := benchBlocks(16, 4096)
	copy(data[5*4096+100:], benchPattern)
	stop := make(chan struct{})
	var gc sync.WaitGroup
	gc.Add(1)
	go func() {
		defer gc.Done()
		for {
			select {
			case <-stop:
				return
			default:
				runtime.GC()
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := 0; g < 4; g++ {
		inst := loadPatternWith(t, engine.JIT, "pattern_filter", benchPattern) // t.Fatal only here, on the test's goroutine
		wg.Add(1)
		go func() {
			defer wg.Done()
			emit := make([]uint64, 16)
			for i := 0; i < 50; i++ {
				res, err := inst.Run(&engine.Context{Data: data, BlockSize: 4096, LBA: 10}, emit)
				if err != nil || res.R0 != 1 || emit[0] != 15 {
					errs <- fmt.Errorf("run %d: %v %v %v", i, res, emit[:res.Emitted], err)
					return
				}
				grow(64) // move this goroutine's stack now and then
			}
		}()
	}
	wg.Wait()
	close(stop)
	gc.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

//go:noinline
func grow(n int) byte {
	var buf [1024]byte
	buf[n%1024] = byte(n)
	if n == 0 {
		return buf[0]
	}
	return grow(n-1) + buf[n%1024]
}

// TestJITFaultStopsRun: a fault inside JIT code reports the same instruction,
// address and size as the interpreter and leaves the instance usable.
func TestJITFaultStopsRun(t *testing.T) {
	needJIT(t)
	prog := asm.Instructions{
		asm.Add.Reg(asm.R1, asm.R2),
		asm.LoadMem(asm.R0, asm.R1, -4, asm.DWord),
		asm.Return(),
	}
	p, err := engine.FromInstructions("f", abi.TypeRaw, prog)
	if err != nil {
		t.Fatal(err)
	}
	x, _ := engine.Compile(p, engine.JIT)
	inst := x.NewInstance()
	_, err = inst.Run(&engine.Context{Data: make([]byte, 16)}, nil)
	var f *engine.Fault
	if !errors.As(err, &f) || f.PC != 1 || f.Size != 8 || f.Addr != 1<<32|12 || f.Write {
		t.Fatalf("got %v (%+v)", err, f)
	}
	// The instance stays usable: the next run faults the same way.
	if _, err2 := inst.Run(&engine.Context{Data: make([]byte, 16)}, nil); err2 == nil || err2.Error() != err.Error() {
		t.Fatalf("second run: %v", err2)
	}
}

// genFaulting turns bytes into a raw program that often ends abnormally:
// legacy packet loads past the data (which end the program with r0 = 0),
// data loads and stores outside the data and helper reads of any length
// (faults), local calls and a loop (the budget). The engines must agree on
// everything, registers included, however the run ends.
func genFaulting(b []byte) asm.Instructions {
	s := &byteSource{b: b}
	p := asm.Instructions{asm.Mov.Reg(asm.R9, asm.R1), asm.Mov.Reg(asm.R8, asm.R2)}
	for r := asm.R0; r <= asm.R7; r++ {
		p = append(p, asm.LoadImm(r, int64(s.u64()%512), asm.DWord))
	}
	reg := func() asm.Register { return []asm.Register{asm.R0, asm.R6, asm.R7}[s.u8()%3] }
	n := int(s.u8()%24) + 1
	for i := 0; i < n; i++ {
		switch s.u8() % 9 {
		case 0:
			p = append(p, asm.LoadAbs(int32(s.u8()%80)-4, []asm.Size{asm.Byte, asm.Half, asm.Word}[s.u8()%3]))
		case 1:
			p = append(p, asm.LoadInd(asm.R0, reg(), int32(s.u8()%80)-8, []asm.Size{asm.Byte, asm.Half, asm.Word}[s.u8()%3]))
		case 2:
			p = append(p, asm.LoadMem(reg(), asm.R9, int16(s.u8()%90)-8, genSizes[s.u8()%4]))
		case 3:
			p = append(p, asm.StoreMem(asm.R9, int16(s.u8()%90)-8, reg(), genSizes[s.u8()%4]))
		case 4:
			p = append(p, asm.Mov.Reg(asm.R1, asm.R9), asm.Mov.Reg(asm.R2, asm.R9), asm.Add.Imm(asm.R2, int32(s.u8()%64)),
				asm.Mov.Imm(asm.R3, int32(s.u8())), asm.BuiltinFunc(abi.HelperMemcmp).Call())
		case 5:
			p = append(p, asm.Mov.Reg(asm.R1, reg()), asm.Mov.Reg(asm.R2, asm.R9), asm.Call.Label("f"))
		case 6:
			p = append(p, asm.Add.Imm(reg(), int32(s.u32())), asm.Mul.Reg(reg(), reg()))
		case 7:
			p = append(p, asm.Xor.Reg(reg(), reg()), asm.RSh.Imm(reg(), int32(s.u8()%64)))
		case 8: // a loop of up to 7 iterations
			c := reg()
			p = append(p, asm.Mov.Imm(c, int32(s.u8()%8)), asm.Sub.Imm(c, 1).WithSymbol(fmt.Sprintf("l%d", i)),
				asm.Add.Imm(asm.R6, 3), asm.JGT.Imm(c, 0, fmt.Sprintf("l%d", i)))
		}
	}
	p = append(p, asm.Return())
	// f: a straight-line callee with a packet load and a data load.
	p = append(p, asm.Mov.Reg(asm.R6, asm.R2).WithSymbol("f"), asm.Mov.Reg(asm.R7, asm.R1),
		asm.LoadAbs(int32(s.u8()%80), asm.Half), asm.Add.Reg(asm.R0, asm.R7),
		asm.LoadMem(asm.R2, asm.R6, int16(s.u8()%80), asm.Word), asm.Add.Reg(asm.R0, asm.R2), asm.Return())
	return p
}

// TestJITMatchesInterpreterAfterFaults compares the engines on programs that
// end through faults, out-of-bounds packet loads and exhausted budgets:
// registers, return value and error must agree however the run ends.
func TestJITMatchesInterpreterAfterFaults(t *testing.T) {
	needJIT(t)
	verified := 0
	for i, s := range seedInputs(150) {
		p, err := engine.FromInstructions("faulting", abi.TypeRaw, genFaulting(s))
		if err != nil {
			continue
		}
		verified++
		for _, budget := range []int64{1 << 20, 50 + int64(s[0])} {
			agree(t, p, genData(s)[:64], 0, budget, fmt.Sprintf("seed %d budget %d", i, budget))
		}
	}
	t.Logf("%d of 150 generated programs verified", verified)
	if verified < 75 {
		t.Fatalf("only %d programs verified: the generator lost its teeth", verified)
	}
}
