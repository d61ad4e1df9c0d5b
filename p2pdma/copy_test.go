package p2pdma

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/nvme/mock"
)

// TestCopyPeerToPeer copies between namespaces of different controllers
// through a CMB: the data arrives intact and the bus counters show that no
// payload byte touched host memory.
func TestCopyPeerToPeer(t *testing.T) {
	for _, mode := range []mock.Mode{mock.Inline, mock.DeviceCore} {
		t.Run(map[mock.Mode]string{mock.Inline: "inline", mock.DeviceCore: "device-core"}[mode], func(t *testing.T) {
			r := standardRig(t, mode)
			const blocks = 3*256 + 17 // several chunks, a short last one
			cases := []struct {
				from, to string
				path     string
			}{
				{"mockAn1", "mockBn1", "cmb of mockB"}, // into the destination's CMB
				{"mockBn1", "mockAn2", "cmb of mockB"}, // the destination has none: the source's
			}
			for i, c := range cases {
				src, dst := r.bdevs[c.from], r.bdevs[c.to]
				srcLBA, dstLBA := uint64(1000+i), uint64(5000+3*i)
				want := fillBlocks(t, src, srcLBA, blocks, uint64(i+1))
				before := r.bus.Stats()
				st, err := Copy(context.Background(), dst, dstLBA, src, srcLBA, blocks, CopyOptions{})
				if err != nil {
					t.Fatalf("%s -> %s: %v", c.from, c.to, err)
				}
				d := busDelta(before, r.bus.Stats())
				bytes := uint64(blocks * 512)
				if st.Via != ViaCMB || st.Path != c.path || st.Bytes != bytes || st.BytesThroughHost != 0 || st.Fallback != "" {
					t.Fatalf("%s -> %s: stats %+v", c.from, c.to, st)
				}
				if d.HostRead != 0 || d.HostWrite != 0 || d.PeerWrite != bytes || d.PeerRead != bytes || d.Faults != 0 {
					t.Fatalf("%s -> %s: bus moved %+v, want %d bytes in and out of peer memory and none through host memory", c.from, c.to, d, bytes)
				}
				if got := sumBlocks(t, dst, dstLBA, blocks); got != want {
					t.Fatalf("%s -> %s: destination checksum %x, source %x", c.from, c.to, got[:8], want[:8])
				}
				if st.Chunks < 2 || st.Commands != 2*uint64((blocks+255)/256) {
					t.Fatalf("%s -> %s: %d chunks in flight, %d commands", c.from, c.to, st.Chunks, st.Commands)
				}
			}
			if a := mustOpen(t, r, "mockB").Allocator().Stats(); a.InUse != 0 {
				t.Fatalf("CMB blocks leaked: %+v", a)
			}
		})
	}
}

func mustOpen(t *testing.T, r *rig, ctrl string) *Region {
	t.Helper()
	reg, err := Open(r.ctrls[ctrl])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	return reg
}

// TestCopyHostFallback: between namespaces of a controller without a CMB,
// ViaAuto bounces through host memory and says why; ViaCMB refuses with a
// message naming the missing CMB and the way out.
func TestCopyHostFallback(t *testing.T) {
	r := standardRig(t, mock.Inline)
	src, dst := r.bdevs["mockAn1"], r.bdevs["mockAn2"]
	want := fillBlocks(t, src, 0, 300, 7)
	var logged []string
	before := r.bus.Stats()
	st, err := Copy(context.Background(), dst, 10, src, 0, 300, CopyOptions{Logf: func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) }})
	if err != nil {
		t.Fatal(err)
	}
	d := busDelta(before, r.bus.Stats())
	if st.Via != ViaHost || st.BytesThroughHost != 300*512 || st.Path != "host memory" {
		t.Fatalf("stats %+v", st)
	}
	if d.HostWrite != 300*512 || d.HostRead != 300*512 || d.PeerRead+d.PeerWrite != 0 {
		t.Fatalf("bus %+v", d)
	}
	if len(logged) != 1 || !strings.Contains(logged[0], "mockA has no controller memory buffer") || !strings.Contains(logged[0], "through host memory") {
		t.Fatalf("fallback message %q", logged)
	}
	if sumBlocks(t, dst, 10, 300) != want {
		t.Fatal("host-bounced copy differs")
	}
	_, err = Copy(context.Background(), dst, 10, src, 0, 300, CopyOptions{Via: ViaCMB})
	mustIs(t, err, ErrPath)
	if msg := err.Error(); !strings.Contains(msg, "mockA has no controller memory buffer") || !strings.Contains(msg, "--via host") {
		t.Fatalf("ViaCMB without a CMB: %q", msg)
	}
	t.Logf("ViaCMB without a CMB: %v", err)
	// Explicit host bounce between controllers on one bus.
	st, err = Copy(context.Background(), r.bdevs["mockBn1"], 0, src, 0, 300, CopyOptions{Via: ViaHost})
	if err != nil || st.Via != ViaHost || st.BytesThroughHost != 300*512 {
		t.Fatalf("ViaHost: %+v %v", st, err)
	}
	if sumBlocks(t, r.bdevs["mockBn1"], 0, 300) != want {
		t.Fatal("host copy between controllers differs")
	}
}

// TestCopyOffload: within one namespace NVM Copy moves the data inside the
// controller; only the 32-byte range descriptors cross the bus.
func TestCopyOffload(t *testing.T) {
	r := standardRig(t, mock.Inline)
	b := r.bdevs["mockAn1"]
	const blocks = 10000 // more than one command (MSSRL 4096)
	want := fillBlocks(t, b, 0, blocks, 3)
	before := r.bus.Stats()
	st, err := Copy(context.Background(), b, 16000, b, 0, blocks, CopyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d := busDelta(before, r.bus.Stats())
	if st.Via != ViaCopy || st.Path != "nvm copy on mockA" || st.BytesThroughHost != 0 || st.Bytes != blocks*512 {
		t.Fatalf("stats %+v", st)
	}
	// Commands of MSSRL (4096) blocks, which the bdev layer splits at its
	// transfer limit; one 32-byte range descriptor per NVMe command.
	per := uint64(b.Info().MaxTransfer / 512)
	nvmeCmds := 2*((4096+per-1)/per) + (blocks-2*4096+per-1)/per
	if d.HostWrite != 0 || d.PeerRead+d.PeerWrite != 0 || d.HostRead != 32*nvmeCmds || st.Commands != 3 {
		t.Fatalf("bus %+v after %d Copy commands", d, st.Commands)
	}
	if sumBlocks(t, b, 16000, blocks) != want {
		t.Fatal("offloaded copy differs")
	}
	// ViaCopy where it cannot work says why.
	_, err = Copy(context.Background(), r.bdevs["mockBn1"], 0, b, 0, 8, CopyOptions{Via: ViaCopy})
	mustIs(t, err, ErrPath)
	if !strings.Contains(err.Error(), "different controllers") {
		t.Fatalf("ViaCopy across controllers: %v", err)
	}
	nc := newRig(t, mock.Config{Name: "mockN", NoCopy: true, Namespaces: []mock.NamespaceConfig{{Kind: mock.Memory, Size: 1 << 20}}})
	_, err = Copy(context.Background(), nc.bdevs["mockNn1"], 100, nc.bdevs["mockNn1"], 0, 8, CopyOptions{Via: ViaCopy})
	mustIs(t, err, ErrPath)
	if !strings.Contains(err.Error(), "does not support Copy") {
		t.Fatalf("ViaCopy without ONCS Copy: %v", err)
	}
	// ViaAuto then stages in host memory (no CMB there).
	st, err = Copy(context.Background(), nc.bdevs["mockNn1"], 100, nc.bdevs["mockNn1"], 0, 8, CopyOptions{})
	if err != nil || st.Via != ViaHost {
		t.Fatalf("auto without Copy support: %+v %v", st, err)
	}
}

func TestCopyInvalid(t *testing.T) {
	r := standardRig(t, mock.Inline)
	a, b, c := r.bdevs["mockAn1"], r.bdevs["mockBn1"], r.bdevs["mockCn1"]
	for name, f := range map[string]func() error{
		"overlap":     func() error { _, err := Copy(context.Background(), a, 10, a, 0, 20, CopyOptions{}); return err },
		"block sizes": func() error { _, err := Copy(context.Background(), c, 0, a, 0, 8, CopyOptions{}); return err },
		"source range": func() error {
			_, err := Copy(context.Background(), b, 0, a, a.NumBlocks()-1, 2, CopyOptions{})
			return err
		},
		"dest range": func() error {
			_, err := Copy(context.Background(), b, b.NumBlocks(), a, 0, 1, CopyOptions{})
			return err
		},
		"zero blocks": func() error { _, err := Copy(context.Background(), b, 0, a, 0, 0, CopyOptions{}); return err },
		"unknown path": func() error {
			_, err := Copy(context.Background(), b, 0, a, 0, 1, CopyOptions{Via: Via(9)})
			return err
		},
		"parse unknown": func() error { _, err := ParseVia("dma"); return err },
	} {
		err := f()
		if err == nil {
			t.Fatalf("%s: accepted", name)
		}
		mustIs(t, err, ErrInvalid)
		t.Logf("%s: %v", name, err)
	}
}

// TestCopyBackPressure: a nearly full CMB slows a copy down to the chunks
// that fit; a full one makes it wait for space; it fails only when no space
// comes within CopyOptions.Wait.
func TestCopyBackPressure(t *testing.T) {
	r := standardRig(t, mock.Inline)
	reg := mustOpen(t, r, "mockB")
	src, dst := r.bdevs["mockAn1"], r.bdevs["mockBn1"]
	want := fillBlocks(t, src, 0, 2048, 9)
	// Leave room for exactly one 128 KiB chunk.
	var held []Block
	for {
		b, err := reg.Alloc(128 << 10)
		if err != nil {
			mustIs(t, err, ErrFull)
			break
		}
		held = append(held, b)
	}
	reg.Free(held[len(held)-1])
	held = held[:len(held)-1]
	st, err := Copy(context.Background(), dst, 0, src, 0, 2048, CopyOptions{Via: ViaCMB})
	if err != nil {
		t.Fatal(err)
	}
	if st.Chunks != 1 || sumBlocks(t, dst, 0, 2048) != want {
		t.Fatalf("one free chunk: %+v", st)
	}
	// Full: the copy waits until another user frees a block.
	last, _ := reg.Alloc(128 << 10)
	go func() {
		time.Sleep(30 * time.Millisecond)
		reg.Free(last)
	}()
	st, err = Copy(context.Background(), dst, 4096, src, 0, 2048, CopyOptions{Via: ViaCMB})
	if err != nil || st.Chunks != 1 {
		t.Fatalf("copy into a full CMB that frees up: %+v %v", st, err)
	}
	if reg.Allocator().Stats().Waits == 0 {
		t.Fatal("the copy did not wait")
	}
	if sumBlocks(t, dst, 4096, 2048) != want {
		t.Fatal("copy after waiting differs")
	}
	// Full for good: a clear error after Wait.
	last, _ = reg.Alloc(128 << 10)
	_, err = Copy(context.Background(), dst, 0, src, 0, 2048, CopyOptions{Via: ViaCMB, Wait: 20 * time.Millisecond})
	mustIs(t, err, ErrFull)
	if !strings.Contains(err.Error(), "stayed full") {
		t.Fatalf("full CMB: %v", err)
	}
	reg.Free(last)
	for _, b := range held {
		reg.Free(b)
	}
}

// TestCopyCancel: a cancelled copy stops, waits for its I/O and frees its
// CMB chunks.
func TestCopyCancel(t *testing.T) {
	r := standardRig(t, mock.DeviceCore)
	reg := mustOpen(t, r, "mockB")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	st, err := Copy(ctx, r.bdevs["mockBn1"], 0, r.bdevs["mockAn1"], 0, 16384, CopyOptions{})
	mustIs(t, err, context.Canceled)
	if st.Bytes >= 16384*512 {
		t.Fatalf("cancelled copy finished: %+v", st)
	}
	if a := reg.Allocator().Stats(); a.InUse != 0 {
		t.Fatalf("chunks leaked: %+v", a)
	}
}

// TestCopyNoAllocPerChunk: the per-chunk path allocates nothing, so a copy
// of many chunks allocates as much as a copy of a few.
func TestCopyNoAllocPerChunk(t *testing.T) {
	r := standardRig(t, mock.Inline)
	src, dst := r.bdevs["mockAn1"], r.bdevs["mockBn1"]
	for _, via := range []Via{ViaCMB, ViaHost} {
		measure := func(blocks uint64) float64 {
			return testing.AllocsPerRun(5, func() {
				if _, err := Copy(context.Background(), dst, 0, src, 0, blocks, CopyOptions{Via: via, ChunkBytes: 16 << 10, InFlight: 4}); err != nil {
					t.Fatal(err)
				}
			})
		}
		few, many := measure(4*32), measure(64*32)
		t.Logf("%v: %v allocations per copy of 4 chunks, %v of 64", via, few, many)
		if many > few {
			t.Fatalf("%v: %v allocations for 4 chunks, %v for 64", via, few, many)
		}
	}
}
