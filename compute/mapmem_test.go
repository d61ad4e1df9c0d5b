package compute_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfblk/bpfblk/compute"
	"github.com/bpfblk/bpfblk/compute/abi"
	"github.com/bpfblk/bpfblk/compute/csd"
	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
)

// tallyExe counts runs in element 0 of an 8 KiB array; its maps take a
// little over 8 KiB per instance. limit is its LoadOptions.MapMemory.
func tallyExe(t *testing.T, limit int64) *engine.Executable {
	t.Helper()
	cs := &ebpf.CollectionSpec{
		Maps: map[string]*ebpf.MapSpec{"tally": {Name: "tally", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1024}},
		Programs: map[string]*ebpf.ProgramSpec{"tally": {Name: "tally", SectionName: abi.SectionScan, Instructions: asm.Instructions{
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.LoadMapPtr(asm.R1, 0).WithReference("tally"),
			asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"),
			asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
			asm.Add.Imm(asm.R1, 1),
			asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
			asm.Return()}}},
	}
	p, err := engine.LoadSpec(cs, &engine.LoadOptions{MapMemory: limit})
	if err != nil {
		t.Fatal(err)
	}
	x, err := engine.Compile(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// TestScanMapMemoryPerInstance: a host scan creates one instance per job and
// refuses to create more than the program's map memory limit holds.
func TestScanMapMemoryPerInstance(t *testing.T) {
	f := newFixture(t)
	cb, err := compute.NewBdev("scan0", f.bdevs)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	_, err = cb.Scan(context.Background(), f.g, tallyExe(t, 12<<10), cb.AllTargets(), compute.Options{Placement: compute.PlaceHost})
	var me *engine.MapMemoryError
	if !errors.As(err, &me) || me.Instances != 2 || !strings.Contains(err.Error(), "for 2 instances, over the map memory limit of 12 KiB") {
		t.Fatalf("got %v", err)
	}
	st, err := cb.Scan(context.Background(), f.g, tallyExe(t, 1<<20), cb.AllTargets(), compute.Options{Placement: compute.PlaceHost})
	if err != nil || len(st.Maps) != 1 || len(st.Maps[0].Entries) != 1024 {
		t.Fatalf("%v", err)
	}
}

// TestDeviceMapMemory: a compute device holds one instance of a program per
// submission queue that runs it and refuses queues beyond its map memory.
func TestDeviceMapMemory(t *testing.T) {
	f := newFixture(t)
	mc, err := mock.NewController(f.bus, mock.Config{Serial: "CSD0", Subsystem: testNQN, Namespaces: []mock.NamespaceConfig{
		{Kind: mock.Memory, Size: 4096, CSI: nvme.CSICP},
		{Kind: mock.Memory, Size: 64 << 20, CSI: nvme.CSISLM},
	}, Compute: &mock.ComputeConfig{MapMemory: 12 << 10, Runner: csd.Runner{}}, Mode: mock.DeviceCore})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := nvme.NewController(mc, nvme.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close(); mc.Close() })
	cb, err := compute.NewBdev("scan0", f.bdevs)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	// The host allows many instances; the device does not. (A job per
	// reactor drives the device, each through its own queue, and the
	// device core runs the first chunks while the second job starts.)
	st, err := cb.Scan(context.Background(), f.g, tallyExe(t, 1<<20), cb.AllTargets(),
		compute.Options{Placement: compute.PlaceDevice, Devices: []*nvme.Controller{dev}, ChunkBytes: 16 << 10, InFlight: 1})
	if err == nil && (st == nil || len(st.Faults) == 0) {
		t.Fatal("device ran more instances than its map memory holds")
	}
	log := strings.Join(mc.ComputeLog(), "\n")
	if !strings.Contains(log, "over the map memory limit of 12 KiB") {
		t.Fatalf("device log %q", log)
	}
}
