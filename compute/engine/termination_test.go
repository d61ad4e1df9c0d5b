package engine_test

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfblk/bpfblk/compute/abi"
	"github.com/bpfblk/bpfblk/compute/engine"
)

// calleeLen is the length of the straight-line function the amplifiers call.
const calleeLen = 120

// amplifier is a raw program whose loop calls a long straight-line local
// function: the loop's own span is tiny, so a budget that charged a call one
// unit let each unit run ~calleeLen instructions. Every iteration adds one
// to the u64 at data[0] (atomically, so the verifier does not track it per
// iteration); it loops while data[8] is non-zero.
func amplifier() asm.Instructions {
	p := asm.Instructions{
		asm.LoadMem(asm.R7, asm.R1, 8, asm.Byte),
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.Call.Label("f").WithSymbol("loop"),
		asm.Mov.Imm(asm.R1, 1),
		asm.AddAtomic.Mem(asm.R6, asm.R1, asm.DWord, 0),
		asm.JNE.Imm(asm.R7, 0, "loop"),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("f"),
	}
	for len(p) < 8+calleeLen-1 {
		p = append(p, asm.Add.Imm(asm.R0, 1))
	}
	return append(p, asm.Return())
}

// TestBudgetChargesCallees: the amplifier at budget 3000 stops with
// ErrBudget after at most budget/calleeLen iterations (a call charges its
// callee's length), quickly, on both engines (TestMain).
func TestBudgetChargesCallees(t *testing.T) {
	insns := amplifier()
	p, err := engine.FromInstructions("amplifier", abi.TypeRaw, insns)
	if err != nil {
		t.Fatal(err)
	}
	x, err := engine.Compile(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	inst := x.NewInstance()
	for _, budget := range []int64{3000, 1 << 20} {
		inst.SetBudget(budget)
		data := make([]byte, 16)
		data[8] = 1
		t0 := time.Now()
		_, err = inst.Run(&engine.Context{Data: data}, nil)
		took := time.Since(t0)
		if !errors.Is(err, engine.ErrBudget) {
			t.Fatalf("budget %d: want ErrBudget, got %v", budget, err)
		}
		iters := int64(binary.LittleEndian.Uint64(data))
		// Instructions run: calleeLen+4 per iteration. They may exceed the
		// units charged by at most the program's length.
		ran := iters * (calleeLen + 4)
		if ran > budget+int64(len(insns)) || iters == 0 {
			t.Fatalf("budget %d: %d iterations ran %d instructions", budget, iters, ran)
		}
		t.Logf("budget %d: %d iterations (%d instructions) in %v", budget, iters, ran, took)
		if budget == 3000 && took > time.Second {
			t.Fatalf("budget 3000 took %v", took)
		}
	}
}

// TestBudgetChargesHelperBytes: a loop of bpfblk_memmem over the whole data
// charges the bytes the helper reads, so a budget bounds the work even when
// the loop itself is a few instructions.
func TestBudgetChargesHelperBytes(t *testing.T) {
	prog := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.Mov.Reg(asm.R7, asm.R2),
		asm.Mov.Imm(asm.R8, 0),
		asm.Mov.Reg(asm.R1, asm.R6).WithSymbol("loop"),
		asm.Mov.Reg(asm.R2, asm.R7),
		asm.Mov.Reg(asm.R3, asm.R6),
		asm.Mov.Imm(asm.R4, 4),
		asm.BuiltinFunc(abi.HelperMemmem).Call(),
		asm.Add.Imm(asm.R8, 1),
		asm.JNE.Imm(asm.R0, -1, "loop"), // the needle is the data's head: always found
		asm.Mov.Reg(asm.R0, asm.R8),
		asm.Return(),
	}
	p, err := engine.FromInstructions("memmem-loop", abi.TypeRaw, prog)
	if err != nil {
		t.Fatal(err)
	}
	x, err := engine.Compile(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	inst := x.NewInstance()
	const budget = 100000
	inst.SetBudget(budget)
	data := make([]byte, 64<<10)
	_, err = inst.Run(&engine.Context{Data: data}, nil)
	if !errors.Is(err, engine.ErrBudget) {
		t.Fatalf("want ErrBudget, got %v", err)
	}
	// Each call reads at least the 4 needle bytes and charges 4 Ki units
	// for the 64 KiB haystack (bytes.Index stops at offset 0, but the
	// charge is for what the helper may read): ~25 calls.
	if calls := inst.Regs()[8]; calls == 0 || calls > budget/(64<<10/16)+1 {
		t.Fatalf("%d calls under a budget of %d", calls, budget)
	}
}

// hostile are programs that never end on their own: a tight loop, the
// amplifier (its flag byte set by the caller) and a loop of helper calls.
func hostile(t *testing.T) map[string]*engine.Program {
	t.Helper()
	progs := map[string]asm.Instructions{
		"tight loop": {
			asm.Mov.Imm(asm.R0, 0),
			asm.Add.Imm(asm.R0, 1).WithSymbol("l"),
			asm.JNE.Imm(asm.R0, 0, "l"), // only after 2^64 iterations
			asm.Return(),
		},
		"amplifier": amplifier(),
		"helper loop": {
			asm.Mov.Reg(asm.R6, asm.R1),
			asm.Mov.Reg(asm.R1, asm.R6).WithSymbol("l"),
			asm.Mov.Reg(asm.R2, asm.R6),
			asm.Mov.Imm(asm.R3, 16),
			asm.BuiltinFunc(abi.HelperMemcmp).Call(),
			asm.JEq.Imm(asm.R0, 0, "l"),
			asm.Return(),
		},
	}
	out := map[string]*engine.Program{}
	for name, insns := range progs {
		p, err := engine.FromInstructions(name, abi.TypeRaw, insns)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out[name] = p
	}
	return out
}

// hostileData makes the amplifier loop forever; the others ignore it.
func hostileData() []byte {
	d := make([]byte, 64)
	d[8] = 1
	return d
}

// TestInterruptStopsRun: a run with a practically unlimited budget stops
// with ErrInterrupted within a second of its interrupt flag being set, on
// both engines (TestMain), and the instance runs normally afterwards.
func TestInterruptStopsRun(t *testing.T) {
	for name, p := range hostile(t) {
		t.Run(name, func(t *testing.T) {
			x, err := engine.Compile(p, nil)
			if err != nil {
				t.Fatal(err)
			}
			inst := x.NewInstance()
			inst.SetBudget(1 << 62)
			var stop atomic.Bool
			inst.SetInterrupt(&stop)
			done := make(chan error, 1)
			go func() {
				_, err := inst.Run(&engine.Context{Data: hostileData()}, nil)
				done <- err
			}()
			time.Sleep(20 * time.Millisecond)
			t0 := time.Now()
			stop.Store(true)
			select {
			case err := <-done:
				if !errors.Is(err, engine.ErrInterrupted) {
					t.Fatalf("want ErrInterrupted, got %v", err)
				}
				t.Logf("stopped %v after the flag: %v", time.Since(t0), err)
			case <-time.After(time.Second):
				t.Fatal("the run did not stop within a second of its interrupt")
			}
			// The flag stays set: the next run stops before it starts.
			if _, err := inst.Run(&engine.Context{Data: hostileData()}, nil); !errors.Is(err, engine.ErrInterrupted) {
				t.Fatalf("run with the flag set: %v", err)
			}
			stop.Store(false)
			inst.SetBudget(1000)
			if _, err := inst.Run(&engine.Context{Data: hostileData()}, nil); !errors.Is(err, engine.ErrBudget) {
				t.Fatalf("run after the interrupt: %v", err)
			}
		})
	}
}

// TestInterruptBetweenBlocks: a per-block filter over many blocks notices
// the flag before each block, so even a filter whose blocks are each short
// stops.
func TestInterruptBetweenBlocks(t *testing.T) {
	prog := asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()}
	inst := mustInstance(t, abi.TypeFilter, prog)
	var stop atomic.Bool
	inst.SetInterrupt(&stop)
	emit := make([]uint64, 100)
	res, err := inst.Run(&engine.Context{Data: make([]byte, 100*512), BlockSize: 512}, emit)
	if err != nil || res.R0 != 100 {
		t.Fatalf("without the flag: %v %v", res, err)
	}
	stop.Store(true)
	_, err = inst.Run(&engine.Context{Data: make([]byte, 100*512), BlockSize: 512, LBA: 7}, emit)
	if !errors.Is(err, engine.ErrInterrupted) {
		t.Fatalf("want ErrInterrupted, got %v", err)
	}
}

// TestJITServesStopTheWorld: while hostile programs run in JIT code on
// other goroutines, runtime.GC (a stop-the-world) must not wait for them
// longer than a slice. Machine code cannot be preempted asynchronously; it
// returns to Go every slice, where the runtime preempts it.
func TestJITServesStopTheWorld(t *testing.T) {
	needJIT(t)
	// gcWorst runs 10 collections and returns the longest runtime.GC call
	// and the longest time the runtime took to stop the world for them
	// (the runtime's own histogram, which is what JIT code could delay).
	gcWorst := func() (call, median, worst time.Duration) {
		before := stoppingHist()
		for i := 0; i < 20; i++ {
			t0 := time.Now()
			runtime.GC()
			call = max(call, time.Since(t0))
		}
		after := stoppingHist()
		return call, histQuantileSince(before, after, 0.5), histQuantileSince(before, after, 1)
	}
	call, median, worst := gcWorst()
	t.Logf("no program running: longest runtime.GC() %v; stopping the world: median %v, longest %v", call, median, worst)
	for name, p := range hostile(t) {
		t.Run(name, func(t *testing.T) {
			x, err := engine.Compile(p, engine.JIT)
			if err != nil {
				t.Fatal(err)
			}
			var stop atomic.Bool
			// Leave one P to this goroutine: with every P busy, runtime.GC
			// also waits for the scheduler's time slices (its sweep loop
			// yields), which is not what this measures.
			done := make(chan error, max(1, runtime.GOMAXPROCS(0)-1))
			for g := 0; g < cap(done); g++ {
				inst := x.NewInstance()
				inst.SetBudget(1 << 62)
				inst.SetInterrupt(&stop)
				go func() {
					_, err := inst.Run(&engine.Context{Data: hostileData()}, nil)
					done <- err
				}()
			}
			time.Sleep(10 * time.Millisecond)
			// A loaded machine may leave the thread that must stop
			// unscheduled for long stretches now and then: measure again
			// (up to three times) before calling a long worst case a
			// failure. JIT code that does not return to Go fails every
			// measurement.
			var call, median, worst time.Duration
			for try := 0; try < 3; try++ {
				call, median, worst = gcWorst()
				if median <= 20*time.Millisecond && worst <= 500*time.Millisecond {
					break
				}
				t.Logf("measurement %d: longest runtime.GC() %v; stopping the world: median %v, longest %v", try, call, median, worst)
			}
			stop.Store(true)
			for g := 0; g < cap(done); g++ {
				if err := <-done; !errors.Is(err, engine.ErrInterrupted) {
					t.Fatalf("want ErrInterrupted, got %v", err)
				}
			}
			t.Logf("longest runtime.GC() %v; stopping the world: median %v, longest %v", call, median, worst)
			// The requirement is a millisecond or so. The limits leave room
			// for a loaded 2-core machine and the race detector, where the
			// OS may not run the thread that must stop for tens of
			// milliseconds; JIT code that does not return to Go (slices of
			// ~10^8 instructions before budgets charged callees) fails them.
			if median > 20*time.Millisecond || worst > 500*time.Millisecond {
				t.Fatalf("stopping the world took a median %v, up to %v, with JIT code running", median, worst)
			}
		})
	}
}

// stoppingHist reads the runtime's histogram of the time taken to stop the
// world for the collector.
func stoppingHist() *metrics.Float64Histogram {
	s := []metrics.Sample{{Name: "/sched/pauses/stopping/gc:seconds"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindFloat64Histogram {
		return nil
	}
	return s[0].Value.Float64Histogram()
}

// histQuantileSince returns the upper bound of the bucket holding quantile q
// of the samples added between a and b.
func histQuantileSince(a, b *metrics.Float64Histogram, q float64) time.Duration {
	if a == nil || b == nil {
		return 0
	}
	var total uint64
	for i := range b.Counts {
		total += b.Counts[i] - a.Counts[i]
	}
	var seen uint64
	for i := range b.Counts {
		seen += b.Counts[i] - a.Counts[i]
		if total > 0 && float64(seen) >= q*float64(total) {
			hi := b.Buckets[i+1]
			if math.IsInf(hi, 1) {
				hi = b.Buckets[i]
			}
			return time.Duration(hi * float64(time.Second))
		}
	}
	return 0
}

// TestContextStopsRun: SetContext does what SetInterrupt does, for a
// context: a cancelled context stops a run that would not end for hours.
func TestContextStopsRun(t *testing.T) {
	x, err := engine.Compile(hostile(t)["amplifier"], nil)
	if err != nil {
		t.Fatal(err)
	}
	inst := x.NewInstance()
	inst.SetBudget(1 << 62)
	ctx, cancel := context.WithCancel(context.Background())
	inst.SetContext(ctx)
	time.AfterFunc(20*time.Millisecond, cancel)
	t0 := time.Now()
	_, err = inst.Run(&engine.Context{Data: hostileData()}, nil)
	if !errors.Is(err, engine.ErrInterrupted) {
		t.Fatalf("want ErrInterrupted, got %v", err)
	}
	if took := time.Since(t0); took > time.Second {
		t.Fatalf("the run took %v to notice its cancelled context", took)
	}
	inst.SetContext(context.Background())
	inst.SetBudget(1000)
	if _, err := inst.Run(&engine.Context{Data: hostileData()}, nil); !errors.Is(err, engine.ErrBudget) {
		t.Fatalf("run with a live context: %v", err)
	}
}
