package engine_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfblk/bpfblk/compute/abi"
	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/compute/kernel"
	"github.com/bpfblk/bpfblk/compute/verifier"
)

// byteSource feeds the program generator; it yields zeros when exhausted.
type byteSource struct{ b []byte }

func (s *byteSource) u8() uint8 {
	if len(s.b) == 0 {
		return 0
	}
	v := s.b[0]
	s.b = s.b[1:]
	return v
}

func (s *byteSource) u32() uint32 {
	return uint32(s.u8()) | uint32(s.u8())<<8 | uint32(s.u8())<<16 | uint32(s.u8())<<24
}

func (s *byteSource) u64() uint64 { return uint64(s.u32()) | uint64(s.u32())<<32 }

const genDataLen = 256

var (
	genALU = []asm.ALUOp{asm.Add, asm.Sub, asm.Mul, asm.Div, asm.SDiv, asm.Or, asm.And, asm.LSh,
		asm.RSh, asm.Neg, asm.Mod, asm.SMod, asm.Xor, asm.Mov, asm.ArSh, asm.MovSX8, asm.MovSX16,
		asm.MovSX32, asm.Swap}
	genJmp = []asm.JumpOp{asm.JEq, asm.JGT, asm.JGE, asm.JSet, asm.JNE, asm.JSGT, asm.JSGE,
		asm.JLT, asm.JLE, asm.JSLT, asm.JSLE, asm.Ja}
	genSizes = []asm.Size{asm.Byte, asm.Half, asm.Word, asm.DWord}
)

// genProgram turns bytes into a valid XDP program that both the engine and
// the kernel accept: registers r0-r8 start from the input, a body of random
// ALU, jump, stack, data and atomic instructions runs, and the epilogue stores
// r0-r8 into the first 72 data bytes. Only forward jumps: no loops.
func genProgram(b []byte) asm.Instructions {
	s := &byteSource{b: b}
	p := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word),
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word),
		asm.Mov.Reg(asm.R9, asm.R2),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 128),
		asm.JGT.Reg(asm.R4, asm.R3, "out"),
		asm.Mov.Imm(asm.R0, 0),
	}
	for k := int16(1); k <= 8; k++ {
		p = append(p, asm.StoreMem(asm.RFP, -8*k, asm.R0, asm.DWord))
	}
	for r := asm.R0; r <= asm.R8; r++ {
		p = append(p, asm.LoadImm(r, int64(s.u64()), asm.DWord))
	}
	n := int(s.u8()%48) + 1
	body := make(asm.Instructions, 0, n)
	reg := func() asm.Register { return asm.Register(s.u8() % 9) }
	for i := 0; i < n; i++ {
		sel := s.u8()
		switch sel % 8 {
		case 3: // pairs the interpreter fuses into one superinstruction
			dst, src, z := reg(), reg(), reg()
			switch s.u8() % 3 {
			case 0:
				body = append(body, asm.Mov.Reg(dst, src), asm.Add.Imm(dst, int32(s.u32())))
			case 1:
				body = append(body, asm.Mov.Reg(dst, src), asm.Add.Reg(dst, z))
			default:
				body = append(body, asm.LSh.Imm(dst, 32), asm.RSh.Imm(dst, 32))
			}
		case 0, 1, 2: // ALU
			op := genALU[int(s.u8())%len(genALU)]
			is32 := s.u8()&1 == 1
			useReg := s.u8()&1 == 1
			dst, src := reg(), reg()
			imm := int32(s.u32())
			switch op {
			case asm.Neg:
				useReg = false
				imm = 0
			case asm.MovSX8, asm.MovSX16, asm.MovSX32:
				useReg = true
				if op == asm.MovSX32 {
					is32 = false
				}
			case asm.Div, asm.SDiv, asm.Mod, asm.SMod:
				if !useReg && imm == 0 {
					imm = 3
				}
			case asm.LSh, asm.RSh, asm.ArSh:
				if !useReg {
					if is32 {
						imm &= 31
					} else {
						imm &= 63
					}
				}
			case asm.Swap:
				w := []int32{16, 32, 64}[s.u8()%3]
				if is32 {
					end := asm.LE
					if s.u8()&1 == 1 {
						end = asm.BE
					}
					body = append(body, asm.HostTo(end, dst, map[int32]asm.Size{16: asm.Half, 32: asm.Word, 64: asm.DWord}[w]))
				} else {
					body = append(body, asm.BSwap(dst, map[int32]asm.Size{16: asm.Half, 32: asm.Word, 64: asm.DWord}[w]))
				}
				continue
			}
			var ins asm.Instruction
			switch {
			case is32 && useReg:
				ins = op.Reg32(dst, src)
			case is32:
				ins = op.Imm32(dst, imm)
			case useReg:
				ins = op.Reg(dst, src)
			default:
				ins = op.Imm(dst, imm)
			}
			body = append(body, ins)
		case 4, 5: // jump forward (patched below)
			op := genJmp[int(s.u8())%len(genJmp)]
			is32 := s.u8()&1 == 1
			ins := asm.Instruction{Dst: reg(), Offset: int16(s.u8())}
			cls := asm.JumpClass
			if is32 {
				cls = asm.Jump32Class
			}
			if op == asm.Ja {
				// Unconditional jumps only as no-ops: skipping code would
				// leave it unreachable, which both verifiers reject.
				ins = asm.Instruction{OpCode: asm.OpCode(cls).SetJumpOp(asm.Ja)}
				body = append(body, ins)
				continue
			}
			if s.u8()&1 == 1 {
				ins.OpCode = asm.OpCode(cls).SetJumpOp(op).SetSource(asm.RegSource)
				ins.Src = reg()
			} else {
				ins.OpCode = asm.OpCode(cls).SetJumpOp(op).SetSource(asm.ImmSource)
				ins.Constant = int64(int32(s.u32()))
			}
			body = append(body, ins)
		case 6: // stack or data load/store
			size := genSizes[s.u8()%4]
			w := int16(size.Sizeof())
			slot := int16(s.u8()%8+1) * 8
			off := -slot + int16(s.u8()%uint8(8/w))*w
			base := asm.RFP
			if s.u8()&1 == 1 {
				base, off = asm.R9, 72+int16(s.u8()%7)*8+int16(s.u8()%uint8(8/w))*w
			}
			switch s.u8() % 4 {
			case 0:
				dst := reg()
				body = append(body, asm.LoadMem(dst, base, off, size))
				// A load then a byte swap of it (ntohl): the JIT's MOVBE.
				if sw := s.u8(); size != asm.Byte && sw%4 == 0 {
					body = append(body, asm.HostTo(asm.BE, dst, size))
				} else if size != asm.Byte && sw%4 == 1 {
					body = append(body, asm.BSwap(dst, size))
				}
			case 1:
				if size == asm.DWord {
					size = asm.Word
				}
				body = append(body, asm.LoadMemSX(reg(), base, off, size))
			case 2:
				body = append(body, asm.StoreMem(base, off, reg(), size))
			default:
				if size == asm.DWord {
					size = asm.Word
				}
				body = append(body, asm.StoreImm(base, off, int64(int32(s.u32())), size))
			}
		case 7: // atomic on the stack
			size := asm.DWord
			if s.u8()&1 == 1 {
				size = asm.Word
			}
			ops := []asm.AtomicOp{asm.AddAtomic, asm.FetchAdd, asm.OrAtomic, asm.FetchOr, asm.AndAtomic,
				asm.FetchAnd, asm.XorAtomic, asm.FetchXor, asm.Xchg, asm.CmpXchg}
			op := ops[int(s.u8())%len(ops)]
			off := -int16(s.u8()%8+1) * 8
			body = append(body, op.Mem(asm.RFP, reg(), size, off))
		}
	}
	// Patch jumps to land inside the body or on the epilogue.
	for i := range body {
		ins := &body[i]
		if ins.OpCode.Class().IsJump() && ins.OpCode.JumpOp() != asm.Ja {
			ins.Offset = int16(int(uint16(ins.Offset)) % (len(body) - i))
		}
	}
	p = append(p, body...)
	for r := asm.R0; r <= asm.R8; r++ {
		p = append(p, asm.StoreMem(asm.R9, int16(r)*8, r, asm.DWord))
	}
	p = append(p, asm.Mov.Imm(asm.R0, 2).WithSymbol("out"), asm.Return())
	return p
}

func seedInputs(n int) [][]byte {
	rng := rand.New(rand.NewPCG(42, 7))
	var out [][]byte
	for i := 0; i < n; i++ {
		b := make([]byte, 72+rng.IntN(400))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		out = append(out, b)
	}
	return out
}

func genData(seed []byte) []byte {
	d := make([]byte, genDataLen)
	for i := range d {
		d[i] = byte(i*31) ^ byte(len(seed))
	}
	return d
}

// FuzzEngineVsKernel generates random valid programs and compares the
// engine with the Linux kernel: return value and all data bytes (which hold
// the final registers). The seed corpus runs on both engines (TestMain);
// fuzzing runs the default engine, the JIT on linux/amd64.
//
// Every program loaded into the kernel is closed again (keeping them ran
// out of file descriptors after ~20,000 programs), a load that fails for any
// reason but the kernel's verifier fails the test, and the number of
// programs actually compared is logged at the end, with those of the
// fuzzing worker processes (see fuzzCounts).
func FuzzEngineVsKernel(f *testing.F) {
	for _, s := range seedInputs(30) {
		f.Add(s)
	}
	var compared, rejected atomic.Int64
	counts := newFuzzCounts(f, "kernel")
	f.Cleanup(func() {
		c, r, where := compared.Load(), rejected.Load(), "this process"
		n, wc, wr, err := counts.workers()
		if err != nil {
			f.Errorf("fuzz worker counts: %v", err)
		}
		if counts.coordinator() {
			c, r, where = c+wc, r+wr, fmt.Sprintf("this process and %d fuzzing worker processes", n)
		}
		f.Logf("%d programs compared with the kernel; %d rejected by the kernel's verifier (in %s)", c, r, where)
	})
	f.Fuzz(func(t *testing.T, b []byte) {
		defer func() { counts.store(compared.Load(), rejected.Load()) }()
		needKernel(t)
		prog := genProgram(b)
		kp, kerr := kernel.LoadInstructions(prog)
		p, err := engine.FromInstructions("fuzz", abi.TypeXDP, prog)
		if kerr != nil {
			if !kernel.IsVerifierRejection(kerr) {
				t.Fatalf("kernel could not load the program (not a verifier rejection): %v", kerr)
			}
			// The generator aims for programs the kernel accepts; when it
			// does not, there is nothing to compare.
			rejected.Add(1)
			t.Skipf("kernel rejected the program: %v", kerr)
		}
		defer kp.Close()
		if err != nil {
			t.Fatalf("engine rejected a program the kernel accepts: %v\n%v", err, prog)
		}
		data := genData(b)
		kret, kout, err := kp.Run(data)
		if err != nil {
			t.Fatal(err)
		}
		x, err := engine.Compile(p, nil)
		if err != nil {
			t.Fatal(err)
		}
		inst := x.NewInstance()
		edata := bytes.Clone(data)
		res, err := inst.Run(&engine.Context{Data: edata}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if uint64(kret) != res.R0 || !bytes.Equal(kout[:len(edata)], edata) {
			for r := 0; r < 9; r++ {
				k := binary.LittleEndian.Uint64(kout[8*r:])
				e := binary.LittleEndian.Uint64(edata[8*r:])
				if k != e {
					t.Errorf("r%d: kernel %#x, engine %#x", r, k, e)
				}
			}
			t.Fatalf("kernel r0 %d data %x\nengine r0 %d data %x\nprogram:\n%v", kret, kout[:len(edata)], res.R0, edata, prog)
		}
		compared.Add(1)
	})
}

// fuzzCounts carries a fuzz target's counts out of go test's fuzzing
// worker processes, which run the inputs and whose output nobody sees: each
// worker keeps its latest counts in a file named after its pid, in a
// directory named after the coordinating process (its parent), which
// creates the directory, sums the files when fuzzing ends and removes them.
type fuzzCounts struct {
	dir  string   // "" when not fuzzing
	file *os.File // a worker's file, nil in the coordinator
}

func newFuzzCounts(f *testing.F, name string) *fuzzCounts {
	worker := flagSet("test.fuzzworker")
	if !worker && !flagSet("test.fuzz") {
		return &fuzzCounts{}
	}
	owner := os.Getpid()
	if worker {
		owner = os.Getppid()
	}
	c := &fuzzCounts{dir: filepath.Join(os.TempDir(), fmt.Sprintf("bpfblk-fuzz-%s-%d", name, owner))}
	if !worker {
		_ = os.RemoveAll(c.dir) // left by an earlier process with this pid
		if err := os.MkdirAll(c.dir, 0o700); err != nil {
			f.Fatal(err)
		}
		f.Cleanup(func() { _ = os.RemoveAll(c.dir) })
		return c
	}
	// A worker without the directory (its coordinator is not this test's)
	// keeps its counts to itself.
	file, err := os.OpenFile(filepath.Join(c.dir, strconv.Itoa(os.Getpid())), os.O_WRONLY|os.O_CREATE, 0o600)
	if err == nil {
		c.file = file
		f.Cleanup(func() { _ = file.Close() })
	}
	return c
}

// flagSet reports whether the test flag name is set to something but its
// zero value.
func flagSet(name string) bool {
	fl := flag.Lookup(name)
	return fl != nil && fl.Value.String() != "" && fl.Value.String() != "false"
}

// coordinator reports whether this process coordinates fuzzing workers.
func (c *fuzzCounts) coordinator() bool { return c.dir != "" && c.file == nil }

// store writes a worker's counts over the previous ones (one write of a
// fixed size at offset 0, so the file always holds a complete line).
func (c *fuzzCounts) store(compared, rejected int64) {
	if c.file == nil {
		return
	}
	_, _ = c.file.WriteAt(fmt.Appendf(nil, "%20d %20d\n", compared, rejected), 0)
}

// workers sums the counts the worker processes stored: how many workers
// stored any, and their totals.
func (c *fuzzCounts) workers() (n int, compared, rejected int64, err error) {
	if !c.coordinator() {
		return 0, 0, 0, nil
	}
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		return 0, 0, 0, err
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(c.dir, e.Name()))
		if err != nil {
			return 0, 0, 0, err
		}
		var cc, rr int64
		if _, err := fmt.Sscan(string(b), &cc, &rr); err != nil {
			return 0, 0, 0, fmt.Errorf("%s: %q: %w", e.Name(), b, err)
		}
		n, compared, rejected = n+1, compared+cc, rejected+rr
	}
	return n, compared, rejected, nil
}

// FuzzVerifier feeds arbitrary bytes to the decoder, the verifier and, when
// they accept, the interpreter: nothing may panic or hang.
func FuzzVerifier(f *testing.F) {
	for _, s := range seedInputs(20) {
		f.Add(s)
		var raw bytes.Buffer
		if err := genProgram(s).Marshal(&raw, binary.LittleEndian); err == nil {
			f.Add(raw.Bytes())
		}
	}
	f.Add(rawInsn(0x95, 0, 0, 0, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 8*4096 {
			return
		}
		for _, typ := range []abi.Type{abi.TypeRaw, abi.TypeXDP, abi.TypeFilter} {
			p, err := engine.FromBytes("fuzz", typ, b)
			if err != nil {
				var ve *verifier.Error
				if errors.As(err, &ve) && ve.Reason == "" {
					t.Fatalf("rejection without a reason: %v", err)
				}
				continue
			}
			x, err := engine.Compile(p, nil)
			if err != nil {
				t.Fatalf("verified program does not compile: %v", err)
			}
			inst := x.NewInstance()
			inst.SetBudget(1 << 16)
			data := make([]byte, 64)
			_, _ = inst.Run(&engine.Context{Data: data, BlockSize: 64}, make([]uint64, 4))
		}
	})
}

// TestFusionMatchesPlain runs generated programs compiled with and without
// superinstructions and compares the results: a differential test of the
// interpreter that needs no kernel.
func TestFusionMatchesPlain(t *testing.T) {
	defer engine.SetFusion(true)
	for i, s := range seedInputs(300) {
		prog := genProgram(s)
		var outs [2][]byte
		var r0 [2]uint64
		for k, on := range []bool{true, false} {
			engine.SetFusion(on)
			p, err := engine.FromInstructions("gen", abi.TypeXDP, prog)
			if err != nil {
				t.Fatalf("seed %d: %v\n%v", i, err, prog)
			}
			x, err := engine.Compile(p, nil)
			if err != nil {
				t.Fatal(err)
			}
			outs[k] = genData(s)
			res, err := x.NewInstance().Run(&engine.Context{Data: outs[k]}, nil)
			if err != nil {
				t.Fatalf("seed %d: %v", i, err)
			}
			r0[k] = res.R0
		}
		if r0[0] != r0[1] || !bytes.Equal(outs[0], outs[1]) {
			t.Fatalf("seed %d: fused and plain runs differ\n%v", i, prog)
		}
	}
}
