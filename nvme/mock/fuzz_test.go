package mock_test

import (
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
)

func sqeBytes(e nvme.SQE) []byte {
	b := make([]byte, 64)
	e.MarshalTo(b)
	return b
}

// FuzzSQE writes arbitrary submission queue entries into a real admin or
// I/O queue (PRPs as given, so the device may DMA anywhere, including into
// the driver's own rings). Neither the device nor the driver may panic or
// hang, and the driver must still complete a normal command afterwards
// (possibly after resetting the controller).
func FuzzSQE(f *testing.F) {
	const base = 0x1000_0000 // first IOVA the bus hands out
	f.Add(false, sqeBytes(nvme.SQE{OPC: nvme.OpRead, NSID: 1, PRP1: base, CDW12: 7}))
	f.Add(false, sqeBytes(nvme.SQE{OPC: nvme.OpWrite, NSID: 1, PRP1: base + 0x3000, PRP2: base + 0x5000, CDW12: 63}))
	f.Add(false, sqeBytes(nvme.SQE{OPC: nvme.OpDSM, NSID: 1, PRP1: base, CDW10: 255, CDW11: 4}))
	f.Add(false, sqeBytes(nvme.SQE{OPC: nvme.OpCopy, NSID: 1, PRP1: base, CDW12: 3}))
	f.Add(false, sqeBytes(nvme.SQE{OPC: nvme.OpWriteZeroes, NSID: 1, CDW10: 0xffffffff, CDW12: 0xffff}))
	f.Add(false, sqeBytes(nvme.SQE{OPC: nvme.OpFlush, NSID: 0xffffffff}))
	f.Add(true, sqeBytes(nvme.SQE{OPC: nvme.AdminDeleteSQ, CDW10: 1}))
	f.Add(true, sqeBytes(nvme.SQE{OPC: nvme.AdminCreateCQ, PRP1: base, CDW10: 7<<16 | 2, CDW11: 1}))
	f.Add(true, sqeBytes(nvme.SQE{OPC: nvme.AdminCreateSQ, PRP1: base, CDW10: 7<<16 | 2, CDW11: 1<<16 | 1}))
	f.Add(true, sqeBytes(nvme.SQE{OPC: nvme.AdminIdentify, PRP1: base + 0x1000, CDW10: 1}))
	f.Add(true, sqeBytes(nvme.SQE{OPC: nvme.AdminGetLogPage, PRP1: base, CDW10: 0xffff0002}))
	f.Add(true, sqeBytes(nvme.SQE{OPC: nvme.AdminAbort, CDW10: 1}))
	f.Add(true, sqeBytes(nvme.SQE{OPC: nvme.AdminSetFeatures, CDW10: nvme.FeatNumQueues}))
	f.Fuzz(func(t *testing.T, admin bool, raw []byte) {
		b := make([]byte, 64)
		copy(b, raw)
		e, err := nvme.ParseSQE(b)
		if err != nil {
			t.Fatal(err)
		}
		bus := mock.NewBus()
		dev, err := mock.NewController(bus, mock.Config{
			Namespaces: []mock.NamespaceConfig{{Kind: mock.Memory, Size: 1 << 20}, {Kind: mock.Null, Size: 1 << 30, LBASize: 4096}},
			MDTS:       2,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctrl, err := nvme.NewController(dev, nvme.Options{IOTimeout: 10 * time.Millisecond,
			AdminTimeout: 20 * time.Millisecond, ReadyTimeout: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer ctrl.Close()
		qp, err := ctrl.NewQueuePair(8)
		if err != nil {
			t.Fatal(err)
		}
		buf, err := dev.AllocDMA(16 << 10)
		if err != nil {
			t.Fatal(err)
		}
		if admin {
			if e.OPC == nvme.AdminAsyncEvent {
				e.OPC = nvme.AdminKeepAlive // would only wait for the admin timeout
			}
			ctrl.AdminCommand(&e, nil, false)
		} else {
			r := newRec()
			if err := qp.Submit(&e, nil, 0, 0, r, 1); err != nil {
				t.Fatal(err)
			}
			if err := qp.Drain(5 * time.Second); err != nil {
				t.Fatal(err)
			}
			if r.n[1] > 1 {
				t.Fatalf("command completed %d times", r.n[1])
			}
		}
		// The driver recovers: a normal read completes (after a reset if the
		// command broke the queue), within bounded time.
		r := newRec()
		if err := qp.Read(ctrl.Namespaces()[0], 0, 1, buf, 0, r, 2); err != nil {
			return // e.g. the controller was reset into a fatal state
		}
		if err := qp.Drain(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		if r.n[2] != 1 {
			t.Fatalf("read completed %d times", r.n[2])
		}
	})
}

// FuzzGarbageCQE posts device-made completions of any content into a live I/O
// queue between real commands. The driver must not panic, must complete
// each real command exactly once, and must keep working.
func FuzzGarbageCQE(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 1, 0, 3, 0, 0x0d, 0x40, 1})
	f.Fuzz(func(t *testing.T, raw []byte) {
		dev, err := mock.NewController(mock.NewBus(), mock.Config{Namespaces: []mock.NamespaceConfig{{Kind: mock.Memory, Size: 1 << 20}}})
		if err != nil {
			t.Fatal(err)
		}
		ctrl, err := nvme.NewController(dev, nvme.Options{IOTimeout: 10 * time.Millisecond, AdminTimeout: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer ctrl.Close()
		qp, _ := ctrl.NewQueuePair(8)
		buf, _ := dev.AllocDMA(4096)
		ns := ctrl.Namespaces()[0]
		r := newRec()
		tag := uint64(0)
		for len(raw) >= 17 {
			e, _ := nvme.ParseCQE(raw)
			wrong := raw[16]&1 != 0
			raw = raw[17:]
			if e.SQID&1 == 0 {
				e.SQID = qp.ID() // mostly aim at this queue
			}
			if err := qp.Read(ns, uint64(tag%8), 1, buf, 0, r, tag); err == nil {
				tag++
			}
			qp.Ring()
			dev.PostCQE(qp.ID(), e, wrong)
			qp.Process(0)
		}
		if err := qp.Drain(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		for i := uint64(0); i < tag; i++ {
			if r.n[i] != 1 {
				t.Fatalf("command %d completed %d times", i, r.n[i])
			}
		}
		if err := qp.Read(ns, 0, 1, buf, 0, r, 1000); err == nil {
			if err := qp.Drain(5 * time.Second); err != nil || r.n[1000] != 1 {
				t.Fatalf("after garbage: %v, %d completions", err, r.n[1000])
			}
		}
	})
}
