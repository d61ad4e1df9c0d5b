package engine_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfblk/bpfblk/compute/abi"
	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/compute/kernel"
)

const benchLoopIters = 1 << 16

// aluLoop: r0 accumulates 8 ALU operations per iteration, r1 counts.
// 10 instructions per iteration (8 ALU, add, jlt).
func aluLoop() asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R0, 1),
		asm.Mov.Imm(asm.R1, 0),
		asm.Mov.Imm(asm.R2, 3),
		asm.Add.Imm(asm.R0, 7).WithSymbol("loop"),
		asm.Mul.Reg(asm.R0, asm.R2),
		asm.Xor.Reg(asm.R0, asm.R1),
		asm.RSh.Imm(asm.R0, 1),
		asm.Add.Reg32(asm.R2, asm.R0),
		asm.And.Imm(asm.R2, 0xff),
		asm.Or.Imm(asm.R2, 1),
		asm.Sub.Reg(asm.R0, asm.R2),
		asm.Add.Imm(asm.R1, 1),
		asm.JLT.Imm(asm.R1, benchLoopIters, "loop"),
		asm.Return(),
	}
}

// benchEngines are the engines every engine benchmark runs, side by side.
var benchEngines = []engine.Engine{engine.JIT, engine.Interpreter}

// BenchmarkALULoop reports each engine's cost per executed instruction.
func BenchmarkALULoop(b *testing.B) {
	p, err := engine.FromInstructions("alu", abi.TypeRaw, aluLoop())
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range benchEngines {
		b.Run(e.Name(), func(b *testing.B) {
			x, err := engine.Compile(p, e)
			if err != nil {
				b.Skip(err)
			}
			inst := x.NewInstance()
			ctx := &engine.Context{Data: make([]byte, 8)}
			const insns = 3 + 10*benchLoopIters + 1
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := inst.Run(ctx, nil); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/insns, "ns/insn")
		})
	}
}

func benchBlocks(n, bs int) []byte {
	data := make([]byte, n*bs)
	for i := range data {
		data[i] = byte(i*7 + i>>9) // never contains the pattern
	}
	return data
}

const benchPattern = "\xfe\xedblk"

// goContains is the pattern filter transliterated to Go: the same 8-byte
// window test as pattern.c.
func goContains(block []byte, pat uint64, n int) bool {
	mask := ^uint64(0)
	if n < 8 {
		mask = 1<<(8*n) - 1
	}
	pat &= mask
	i := 0
	for ; i+8 <= len(block); i++ {
		if (binary.LittleEndian.Uint64(block[i:])^pat)&mask == 0 {
			return true
		}
	}
	if len(block) < 8 {
		return false
	}
	w := binary.LittleEndian.Uint64(block[len(block)-8:])
	for k := 1; k+n <= 8; k++ {
		if ((w>>(8*k))^pat)&mask == 0 {
			return true
		}
	}
	return false
}

// BenchmarkPatternFilter compares the byte-pattern filter over 4 KiB blocks:
// each engine running pattern_filter (plain loads) and pattern_memmem (the
// helper), the same algorithm in Go, bytes.Contains, and the kernel's JIT
// running pattern_xdp on 3,520-byte buffers (the most XDP test runs can
// address) next to each engine on the same buffers.
func BenchmarkPatternFilter(b *testing.B) {
	const bs, blocks = 4096, 64
	data := benchBlocks(blocks, bs)
	var p8 [8]byte
	copy(p8[:], benchPattern)
	pat := binary.LittleEndian.Uint64(p8[:])
	for _, e := range benchEngines {
		for _, prog := range []string{"pattern_filter", "pattern_memmem"} {
			b.Run(e.Name()+"/"+prog, func(b *testing.B) {
				inst := loadPatternWith(b, e, prog, benchPattern)
				ctx := &engine.Context{Data: data, BlockSize: bs}
				emit := make([]uint64, blocks)
				b.SetBytes(int64(len(data)))
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if res, err := inst.Run(ctx, emit); err != nil || res.R0 != 0 {
						b.Fatal(res, err)
					}
				}
			})
		}
	}
	b.Run("go/window", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			for blk := 0; blk < blocks; blk++ {
				if goContains(data[blk*bs:(blk+1)*bs], pat, len(benchPattern)) {
					b.Fatal("match")
				}
			}
		}
	})
	b.Run("go/bytes.Contains", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			for blk := 0; blk < blocks; blk++ {
				if bytes.Contains(data[blk*bs:(blk+1)*bs], []byte(benchPattern)) {
					b.Fatal("match")
				}
			}
		}
	})
	buf := data[:kernel.MaxData]
	for _, e := range benchEngines {
		b.Run(e.Name()+"/pattern_xdp-3520", func(b *testing.B) {
			inst := loadPatternWith(b, e, "pattern_xdp", benchPattern)
			ctx := &engine.Context{Data: buf}
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if res, err := inst.Run(ctx, nil); err != nil || res.R0 != 0 {
					b.Fatal(res, err)
				}
			}
		})
	}
	b.Run("kernel/pattern_xdp-3520", func(b *testing.B) {
		needKernel(b)
		cs, err := patternSpec()
		if err != nil {
			b.Fatal(err)
		}
		kp, err := kernel.LoadSpec(cs, "pattern_xdp", patternVars(benchPattern))
		if err != nil {
			b.Fatal(err)
		}
		defer kp.Close()
		b.SetBytes(int64(len(buf)))
		b.ResetTimer()
		// The kernel repeats the run b.N times and reports the mean.
		ret, ns, err := kp.Benchmark(buf, b.N)
		if err != nil || ret != 0 {
			b.Fatal(ret, err)
		}
		b.ReportMetric(ns, "kernel-ns/run")
	})
}
