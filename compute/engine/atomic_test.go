package engine_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfblk/bpfblk/compute/abi"
	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/compute/kernel"
)

// atomicProg runs one atomic operation on the stack slot fp-8 (holding mem),
// with src in r6 and r0 = cmp, and stores the slot, r6 and r0 into the first
// 24 bytes of the data.
func atomicProg(op asm.AtomicOp, size asm.Size, mem, src, cmp uint64) asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word),
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 24),
		asm.JGT.Reg(asm.R4, asm.R3, "out"),
		asm.LoadImm(asm.R5, int64(mem), asm.DWord),
		asm.StoreMem(asm.RFP, -8, asm.R5, asm.DWord),
		asm.LoadImm(asm.R6, int64(src), asm.DWord),
		asm.LoadImm(asm.R0, int64(cmp), asm.DWord),
		op.Mem(asm.RFP, asm.R6, size, -8),
		asm.LoadMem(asm.R5, asm.RFP, -8, asm.DWord),
		asm.StoreMem(asm.R2, 0, asm.R5, asm.DWord),
		asm.StoreMem(asm.R2, 8, asm.R6, asm.DWord),
		asm.StoreMem(asm.R2, 16, asm.R0, asm.DWord),
		asm.Mov.Imm(asm.R0, 2).WithSymbol("out"),
		asm.Return(),
	}
}

// atomicWant is RFC 9669's meaning of the operation: the slot, src and r0
// afterwards. A 32-bit operation works on the slot's low word, and a value it
// loads into a register is zero-extended.
func atomicWant(op asm.AtomicOp, size asm.Size, mem, src, cmp uint64) (uint64, uint64, uint64) {
	width := ^uint64(0)
	if size == asm.Word {
		width = 0xffff_ffff
	}
	old, s := mem&width, src&width
	var nv uint64
	switch op {
	case asm.AddAtomic, asm.FetchAdd:
		nv = old + s
	case asm.OrAtomic, asm.FetchOr:
		nv = old | s
	case asm.AndAtomic, asm.FetchAnd:
		nv = old & s
	case asm.XorAtomic, asm.FetchXor:
		nv = old ^ s
	case asm.Xchg:
		nv = s
	case asm.CmpXchg:
		nv = old
		if old == cmp&width {
			nv = s
		}
	}
	mem = mem&^width | nv&width
	switch op {
	case asm.FetchAdd, asm.FetchOr, asm.FetchAnd, asm.FetchXor, asm.Xchg:
		src = old
	case asm.CmpXchg:
		cmp = old
	}
	return mem, src, cmp
}

// TestAtomics checks every atomic operation at both widths, with and without
// fetch, and CMPXCHG that matches and that does not, against the RFC's
// definition and, where bpf() is allowed, against the Linux kernel.
func TestAtomics(t *testing.T) {
	const mem, src = 0x1122_3344_8899_aabb, 0x0f0f_0f0f_f0f0_f0f0
	ops := []asm.AtomicOp{asm.AddAtomic, asm.FetchAdd, asm.OrAtomic, asm.FetchOr, asm.AndAtomic,
		asm.FetchAnd, asm.XorAtomic, asm.FetchXor, asm.Xchg, asm.CmpXchg}
	kernelErr := kernelAvailable()
	for _, size := range []asm.Size{asm.Word, asm.DWord} {
		for _, op := range ops {
			cmps := []uint64{7}
			if op == asm.CmpXchg {
				cmps = []uint64{mem, 0xdead_0000_8899_aabb, 7} // equal, equal in the low word only, different
			}
			for _, cmp := range cmps {
				name := fmt.Sprintf("%v/%v/cmp=%#x", op, size, cmp)
				t.Run(name, func(t *testing.T) {
					prog := atomicProg(op, size, mem, src, cmp)
					p, err := engine.FromInstructions("atomic", abi.TypeXDP, prog)
					if err != nil {
						t.Fatal(err)
					}
					x, err := engine.Compile(p, nil)
					if err != nil {
						t.Fatal(err)
					}
					data := make([]byte, 64)
					if _, err := x.NewInstance().Run(&engine.Context{Data: data}, nil); err != nil {
						t.Fatal(err)
					}
					wm, ws, w0 := atomicWant(op, size, mem, src, cmp)
					want := binary.LittleEndian.AppendUint64(nil, wm)
					want = binary.LittleEndian.AppendUint64(want, ws)
					want = binary.LittleEndian.AppendUint64(want, w0)
					if !bytes.Equal(data[:24], want) {
						t.Fatalf("slot, src, r0 = %x, want %x", data[:24], want)
					}
					if kernelErr != nil {
						return
					}
					kp, err := kernel.LoadInstructions(prog)
					if err != nil {
						t.Fatalf("kernel: %v", err)
					}
					defer kp.Close()
					_, kout, err := kp.Run(make([]byte, 64))
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(kout[:24], want) {
						t.Fatalf("kernel: slot, src, r0 = %x, want %x", kout[:24], want)
					}
				})
			}
		}
	}
	if kernelErr != nil {
		t.Logf("kernel half skipped: %v", kernelErr)
	}
}
