//go:build linux && amd64

package engine_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/compute/engine"
)

// BenchmarkMemmemVsContains runs pattern_memmem on the JIT over 64 blocks
// of 4 KiB and bytes.Contains over the same blocks, alternately in every
// iteration, so that both see the same load on a shared machine, and
// reports both times and speed = bytes.Contains time / JIT time (1.0: the
// JIT runs the filter as fast as Go finds the pattern). Sub-benchmarks:
// the helper in assembly called from JIT code (native; AVX2 where the CPU
// has it, and the SSE2 baseline), the helper's Go path (go-path), and the
// assembly search called directly from Go on each block (asm-from-go: the
// search alone, without the program).
func BenchmarkMemmemVsContains(b *testing.B) {
	const bs, blocks = 4096, 64
	data := benchBlocks(blocks, bs)
	pat := []byte(benchPattern)
	contains := func() time.Duration {
		t0 := time.Now()
		for blk := 0; blk < blocks; blk++ {
			if bytes.Contains(data[blk*bs:(blk+1)*bs], pat) {
				b.Fatal("match")
			}
		}
		return time.Since(t0)
	}
	run := func(b *testing.B, side func() time.Duration) {
		var tj, tg time.Duration
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			tj += side()
			tg += contains()
		}
		b.ReportMetric(float64(tj.Nanoseconds())/float64(b.N), "side-ns/op")
		b.ReportMetric(float64(tg.Nanoseconds())/float64(b.N), "contains-ns/op")
		b.ReportMetric(float64(tg)/float64(tj), "speed")
	}
	program := func(native, baseline bool) func(b *testing.B) {
		return func(b *testing.B) {
			restore := engine.SetJITNativeMemmem(native)
			if baseline {
				defer engine.SetJITBaseline()()
			}
			inst := loadPatternWith(b, engine.JIT, "pattern_memmem", benchPattern)
			restore()
			ctx := &engine.Context{Data: data, BlockSize: bs}
			emit := make([]uint64, blocks)
			run(b, func() time.Duration {
				t0 := time.Now()
				if res, err := inst.Run(ctx, emit); err != nil || res.R0 != 0 {
					b.Fatal(res, err)
				}
				return time.Since(t0)
			})
		}
	}
	if engine.JITUsesAVX2() {
		b.Run("native-avx2", program(true, false))
	}
	b.Run("native-sse2", program(true, true))
	b.Run("go-path", program(false, false))
	b.Run("asm-from-go", func(b *testing.B) {
		run(b, func() time.Duration {
			t0 := time.Now()
			for blk := 0; blk < blocks; blk++ {
				if i, _ := engine.MemmemIndex(data[blk*bs:(blk+1)*bs], pat, engine.JITUsesAVX2()); i >= 0 {
					b.Fatal("match")
				}
			}
			return time.Since(t0)
		})
	})
}
