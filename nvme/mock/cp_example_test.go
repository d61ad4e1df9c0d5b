package mock_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/bpfblk/bpfblk/compute/csd"
	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/filters"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
)

// Example_computeOffload runs a filter where the data is: a data controller
// and a computational storage controller of one NVM subsystem share a bus
// (the data reaches the compute controller peer to peer); the host discovers
// the compute namespace from Identify, loads a verified program, copies LBAs
// into device memory and reads back only the match list.
func Example_computeOffload() {
	bus := mock.NewBus()
	const nqn = "nqn.2026-01.io.example:csd"
	dm, _ := mock.NewController(bus, mock.Config{Subsystem: nqn, Namespaces: []mock.NamespaceConfig{{Kind: mock.Memory, Size: 1 << 20}}})
	cm, _ := mock.NewController(bus, mock.Config{Subsystem: nqn, Compute: &mock.ComputeConfig{Runner: csd.Runner{}}, Namespaces: []mock.NamespaceConfig{
		{Kind: mock.Memory, Size: 4096, CSI: nvme.CSICP},
		{Kind: mock.Memory, Size: 1 << 20, CSI: nvme.CSISLM},
	}})
	data, _ := nvme.NewController(dm, nvme.Options{})
	comp, _ := nvme.NewController(cm, nvme.Options{})
	defer data.Close()
	defer comp.Close()
	cns, _ := comp.ComputeNamespaces()
	cp, slm := cns[0].CP, cns[0].Memory[0]
	fmt.Printf("compute namespace %d, memory namespace %d (%d bytes), %d program slots\n", cp.ID, slm.ID, cns[0].Sizes[0], cns[0].Info.Slots)

	// Write 16 blocks; block 9 holds an ERROR line.
	ns := data.Namespaces()[0]
	dq, _ := data.NewQueuePair(4)
	buf, _ := dm.AllocDMA(16 << 10)
	copy(buf.Buf, bytes.Repeat([]byte("INFO all good\n"), 1024))
	copy(buf.Buf[9*512+40:], "ERROR disk on fire")
	cpRun(dq, func(c nvme.Completer) error { return dq.Write(ns, 0, 16, buf, 0, c, 0) })

	// The built-in pattern filter, verified on the host, again on the device.
	spec, _ := filters.LoadPattern()
	prog, _ := engine.LoadSpec(spec, &engine.LoadOptions{Program: "pattern_memmem",
		Vars: map[string]any{"pattern": binary.LittleEndian.Uint64([]byte("ERROR\x00\x00\x00")), "pattern_len": uint32(5)}})
	img, _ := csd.Image(prog)
	if err := comp.LoadProgram(cp, 0, nvme.ProgTypeEBPF, img, 0); err != nil {
		fmt.Println(err)
		return
	}
	comp.ActivateProgram(cp, 0)
	rsid, _ := comp.CreateRangeSet(cp, []nvme.MemRange{{NSID: slm.ID, Offset: 0, Length: 8192}, {NSID: slm.ID, Offset: 65536, Length: 4096}})

	q, _ := comp.NewQueuePair(4)
	src := []nvme.MemCopySource{{Controller: data.IdentifyData().CNTLID, NSID: ns.ID, LBA: 0, Blocks: 16}}
	cpRun(q, func(c nvme.Completer) error { return q.MemoryCopy(slm, 0, src, c, 0) })
	r0 := cpRun(q, func(c nvme.Completer) error {
		return q.ExecuteProgram(cp, 0, rsid, 0, 0, uint64(ns.ID)|512<<32, 0, c, 0)
	})
	out, _ := cm.AllocDMA(4096)
	cpRun(q, func(c nvme.Completer) error { return q.MemoryRead(slm, 65536, out, 0, 24, c, 0) })
	h := nvme.ParseExecResult(out.Buf)
	fmt.Printf("r0 = %d, %d match: LBA %d\n", r0, h.Count, binary.LittleEndian.Uint64(out.Buf[16:]))
	// Output:
	// compute namespace 1, memory namespace 2 (1048576 bytes), 8 program slots
	// r0 = 1, 1 match: LBA 9
}

// cpRun submits one command and waits for it (at most 5 s).
func cpRun(qp *nvme.QueuePair, submit func(nvme.Completer) error) uint64 {
	var done bool
	var v uint64
	cb := nvme.CompleterFunc(func(_, r uint64, err error) {
		done, v = true, r
		if err != nil {
			fmt.Println(err)
		}
	})
	if err := submit(cb); err != nil {
		fmt.Println(err)
		return 0
	}
	for end := time.Now().Add(5 * time.Second); !done && time.Now().Before(end); {
		qp.Process(0)
	}
	return v
}
