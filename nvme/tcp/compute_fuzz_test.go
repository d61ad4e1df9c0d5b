package tcp

import (
	"fmt"
	"testing"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/internal/cpwire"
	"github.com/bpfblk/bpfblk/nvme/tcp/internal/pdu"
)

// Device NSIDs of fakeDevice: the target must hand it only these.
const (
	fakeCP  = 100
	fakeMem = 200
	fakeSrc = 300 // the device's name of exported namespace 1
)

// fakeDevice checks that every NSID the target forwards is the device's
// and completes I/O from Poll.
type fakeDevice struct {
	t    *testing.T
	rsid uint32
}

func (d *fakeDevice) Identify(cns uint8, nsid uint32, csi uint8, b []byte) error {
	if nsid != fakeCP && nsid != fakeMem {
		d.t.Fatalf("identify of device namespace %d", nsid)
	}
	b[0] = 1
	return nil
}

func (d *fakeDevice) Admin(sqe *nvme.SQE, data []byte) (uint32, error) {
	if sqe.NSID != fakeCP {
		d.t.Fatalf("admin opcode %#x for device namespace %d", sqe.OPC, sqe.NSID)
	}
	if sqe.OPC == nvme.AdminMemRangeSetMg && sqe.CDW10&0xf == nvme.RangeSetSelCreate {
		for off := 0; off+nvme.MemRangeSize <= len(data); off += nvme.MemRangeSize {
			if n := le.Uint32(data[off+cpwire.RangeNSID:]); n != fakeMem {
				d.t.Fatalf("range of device namespace %d", n)
			}
		}
		d.rsid++
		return d.rsid, nil
	}
	return 0, nil
}

func (d *fakeDevice) Open(depth int) (ComputeChannel, error) {
	return &fakeChan{d: d}, nil
}

type fakeChan struct {
	d    *fakeDevice
	done []memDone
}

func (c *fakeChan) Submit(sqe *nvme.SQE, data []byte, toDevice bool, done nvme.Completer, tag uint64) error {
	if len(c.done) == 8 {
		return ErrBusy
	}
	switch sqe.NSID {
	case fakeCP:
	case fakeMem:
		if srcs, host := HostCopySources(sqe, data, make([]nvme.MemCopySource, 0, 128)); host {
			// A host copy: every source marked, with an exported NSID.
			for _, s := range srcs {
				if s.Controller != HostCopyController || s.NSID < 1 || s.NSID > 2 {
					c.d.t.Fatalf("host copy source %+v", s)
				}
			}
		} else if sqe.OPC == nvme.OpMemCopy {
			for off := 0; off+nvme.MemCopySourceSize <= len(data); off += nvme.MemCopySourceSize {
				if n := le.Uint32(data[off+cpwire.CopyNSID:]); n != fakeSrc {
					c.d.t.Fatalf("memory copy from device namespace %d", n)
				}
			}
		}
	default:
		c.d.t.Fatalf("I/O opcode %#x for device namespace %d", sqe.OPC, sqe.NSID)
	}
	if !toDevice {
		clear(data)
	}
	c.done = append(c.done, memDone{done, tag, nil})
	return nil
}

func (c *fakeChan) Poll() int {
	n := len(c.done)
	for _, d := range c.done {
		d.c.Complete(d.tag, 7, d.err)
	}
	c.done = c.done[:0]
	return n
}

func (c *fakeChan) Close() error { return nil }

// capsule returns a command capsule of sqe with in-capsule data.
func capsule(sqe []byte, data []byte) []byte {
	if len(data) > 0 {
		sqe[sglTypeOffset] = sglInCapsule
		le.PutUint32(sqe[32:], uint32(len(data)))
	}
	b := make([]byte, pdu.CapsuleCmdLen+len(data))
	pdu.PutCapsuleCmd(b, sqe, len(data), false, false)
	copy(b[pdu.CapsuleCmdLen:], data)
	return b
}

// The NSIDs hosts see for the compute and memory namespaces of the fuzzed
// target, which has two NVM namespaces.
const seedCP, seedMem = 3, 4

// computeSeeds are CP/SLM admin and I/O commands as a host sends them to
// the exported namespaces of the fuzzed target.
func computeSeeds() (admin, io [][]byte) {
	var out [][]byte
	sqe := func(opc uint8, nsid uint32, cdw ...uint32) []byte {
		s := make([]byte, 64)
		s[0] = opc
		le.PutUint32(s[4:], nsid)
		for i, v := range cdw {
			le.PutUint32(s[40+4*i:], v)
		}
		return s
	}
	img := make([]byte, 64)
	out = append(out, capsule(sqe(nvme.AdminLoadProgram, seedCP, 0|uint32(nvme.ProgTypeEBPF)<<16, 64, 0, 0, 64, 0), img))
	out = append(out, capsule(sqe(nvme.AdminProgActMgmt, seedCP, 0), nil))
	rng := make([]byte, 2*nvme.MemRangeSize)
	le.PutUint32(rng[0:], seedMem)
	le.PutUint32(rng[4:], 4096)
	le.PutUint32(rng[32:], seedMem)
	le.PutUint32(rng[36:], 4096)
	le.PutUint64(rng[40:], 4096)
	out = append(out, capsule(sqe(nvme.AdminMemRangeSetMg, seedCP, nvme.RangeSetSelCreate, 1), rng))
	for _, id := range [][3]uint32{{nvme.CNSCSINamespace, seedCP, nvme.CSICP}, {nvme.CNSCSINamespace, seedMem, nvme.CSISLM}, {nvme.CNSNSDescList, seedMem, 0}, {nvme.CNSIOCommandSetData, 0, 0}} {
		s := sqe(nvme.AdminIdentify, id[1], id[0], id[2]<<24)
		s[sglTypeOffset] = sglTransport
		le.PutUint32(s[32:], 4096)
		out = append(out, capsule(s, nil))
	}
	admin, out = out, nil
	src := make([]byte, nvme.MemCopySourceSize)
	le.PutUint32(src[cpwire.CopyNSID:], 1)
	out = append(out, capsule(sqe(nvme.OpMemCopy, seedMem, 0, 0, nvme.MemCopyFormatLBA<<8), src))
	// From both namespaces: the second is out of the device's reach, so
	// the copy becomes a host copy.
	two := make([]byte, 2*nvme.MemCopySourceSize)
	le.PutUint32(two[cpwire.CopyNSID:], 1)
	le.PutUint32(two[nvme.MemCopySourceSize+cpwire.CopyNSID:], 2)
	out = append(out, capsule(sqe(nvme.OpMemCopy, seedMem, 0, 0, 1|nvme.MemCopyFormatLBA<<8), two))
	ex := sqe(nvme.OpExecProgram, seedCP, 0, 0, 1, 0)
	le.PutUint32(ex[8:], 1<<16)
	out = append(out, capsule(ex, nil))
	out = append(out, capsule(sqe(nvme.OpMemWrite, seedMem, 0, 0, 8), make([]byte, 8)))
	// 256 sources (NR 255), more than a page of descriptors holds.
	out = append(out, capsule(sqe(nvme.OpMemCopy, seedMem, 0, 0, 255|nvme.MemCopyFormatLBA<<8), make([]byte, 256*nvme.MemCopySourceSize)))
	rd := sqe(nvme.OpMemRead, seedMem, 0, 0, 8)
	rd[sglTypeOffset] = sglTransport
	le.PutUint32(rd[32:], 8)
	out = append(out, capsule(rd, nil))
	return admin, out
}

// FuzzTargetCompute feeds arbitrary capsules to the admin queue and an I/O
// queue of a controller of a target that exports a compute device: the
// target must answer or close the connection, never panic, and hand the
// device only the device's own NSIDs — in commands, range descriptors and
// Memory Copy sources.
func FuzzTargetCompute(f *testing.F) {
	admin, io := computeSeeds()
	for k, seeds := range [][][]byte{io, admin} {
		var all []byte
		for _, s := range seeds {
			f.Add(s, uint8(7), k == 1)
			all = append(all, s...)
		}
		f.Add(all, uint8(64), k == 1)
	}
	f.Fuzz(func(t *testing.T, data []byte, piece uint8, admin bool) {
		// Namespace 1 the device reads, namespace 2 it reaches by host copies.
		tg, err := NewTarget(TargetConfig{Namespaces: []Namespace{newMemNS(512, 64), newMemNS(4096, 16)},
			Compute: &ComputeExport{Device: &fakeDevice{t: t}, CP: fakeCP, Memory: []uint32{fakeMem}, MemorySizes: []uint64{1 << 20}, Hosts: 2,
				Sources: []CopySource{{NSID: fakeSrc, Reach: true}, {}}, HostCopy: true}})
		if err != nil {
			t.Fatal(err)
		}
		w := tg.workers[0]
		c, err := tg.newCtrl("nqn.host", false)
		if err != nil {
			t.Fatal(err)
		}
		c.csts.Store(nvme.CSTSReady)
		q := &tqueue{w: w, ctrl: c, qid: 1}
		if admin {
			q.qid = 0
			q.adminBuf = make([]byte, tgtAdminBuf)
		}
		c.queues[q.qid] = q
		q.c = &conn{name: "fuzz", side: pdu.Controller, h: q, rx: make([]byte, 1024), tx: make([]byte, 0, 1<<20),
			lim: pdu.Limits{MaxData: tgtMaxH2C}, init: true}
		q.setDepth(8)
		feed(q.c, data, int(piece))
		for i := 0; i < 4; i++ {
			w.pollCompute()
			q.progress()
			q.c.tx = q.c.tx[:0]
		}
		tg.dropCtrl(c)
		if own := tg.cp.own.Load(); len(own.slots)+len(own.sets)+len(own.parts) != 0 {
			t.Fatalf("the controller's slots, range sets or memory outlive it: %v", fmt.Sprint(own))
		}
	})
}
