package vfio_test

import (
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/pkg/errors"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/vfio"
)

// devicesEnv names the PCI functions the device tests may take. Their data
// is overwritten.
const devicesEnv = "BPFBLK_VFIO_TEST_DEVICES"

// testDevices returns the functions from BPFBLK_VFIO_TEST_DEVICES or skips.
func testDevices(t *testing.T) []string {
	t.Helper()
	v := os.Getenv(devicesEnv)
	if v == "" {
		t.Skip(devicesEnv + " is not set: these tests need NVMe functions bound to vfio-pci whose data may be " +
			"overwritten (e.g. " + devicesEnv + "=0000:01:00.0,0000:02:00.0); test/qemu runs them in a QEMU guest")
	}
	var out []string
	for _, d := range strings.Split(v, ",") {
		if d = strings.TrimSpace(d); d != "" {
			out = append(out, d)
		}
	}
	return out
}

func quietOptions(t *testing.T, c *vfio.Container) *vfio.Options {
	return &vfio.Options{Container: c, Logf: t.Logf}
}

// openAll opens every test device, in one shared container when shared.
func openAll(t *testing.T, shared bool) []*vfio.Device {
	t.Helper()
	addrs := testDevices(t)
	var c *vfio.Container
	if shared {
		var err error
		if c, err = vfio.OpenContainer(vfio.ContainerOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	var devs []*vfio.Device
	for _, a := range addrs {
		d, err := vfio.Open(a, quietOptions(t, c))
		if err != nil {
			t.Fatalf("open %s: %v", a, err)
		}
		t.Cleanup(func() { d.Close() })
		devs = append(devs, d)
	}
	return devs
}

// cmbDevice returns the first device with a CMB and the others.
func cmbDevice(t *testing.T, devs []*vfio.Device) (*vfio.Device, *vfio.CMB, []*vfio.Device) {
	t.Helper()
	for i, d := range devs {
		c, err := d.CMB()
		if errors.Is(err, vfio.ErrNoCMB) {
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", d.Name(), err)
		}
		others := append(append([]*vfio.Device(nil), devs[:i]...), devs[i+1:]...)
		return d, c, others
	}
	// A skip fails the QEMU harness, which requires these tests to pass.
	t.Skipf("none of the %d devices has a CMB", len(devs))
	return nil, nil, nil
}

// waiter is a Completer that records one completion.
type waiter struct {
	done   bool
	err    error
	result uint64
}

func (w *waiter) Complete(_ uint64, result uint64, err error) {
	w.done, w.err, w.result = true, err, result
}

// do submits one command through submit and waits for it.
func do(qp *nvme.QueuePair, submit func(cb nvme.Completer) error) error {
	w := &waiter{}
	if err := submit(w); err != nil {
		return err
	}
	if err := qp.Drain(20 * time.Second); err != nil {
		return err
	}
	if !w.done {
		return errors.New("command did not complete")
	}
	return w.err
}

func fill(b []byte, seed byte) {
	for i := range b {
		b[i] = seed ^ byte(i) ^ byte(i>>8)*31
	}
}

// rawQueue is a minimal polled queue pair on raw DMA memory, used where the
// tests must control the queues themselves (bring-up without the driver,
// interrupt-driven completion queues).
type rawQueue struct {
	t       nvme.Transport
	qid     uint16
	depth   int
	sq, cq  *nvme.DMA
	tail    int
	head    int
	phase   uint32
	dstrd   uint8
	cid     uint16
	timeout time.Duration
}

func newRawQueue(t nvme.Transport, qid uint16, depth int) (*rawQueue, error) {
	sq, err := t.AllocDMA(depth * nvme.SQESize)
	if err != nil {
		return nil, err
	}
	cq, err := t.AllocDMA(depth * nvme.CQESize)
	if err != nil {
		t.FreeDMA(sq)
		return nil, err
	}
	return &rawQueue{t: t, qid: qid, depth: depth, sq: sq, cq: cq, phase: 1,
		dstrd: nvme.CAP(t.Read64(nvme.RegCAP)).DSTRD(), timeout: 10 * time.Second}, nil
}

func (q *rawQueue) free() {
	q.t.FreeDMA(q.sq)
	q.t.FreeDMA(q.cq)
}

// post writes sqe into the SQ and rings the doorbell; it returns the CID.
func (q *rawQueue) post(sqe nvme.SQE) uint16 {
	q.cid++
	sqe.CID = q.cid
	sqe.MarshalTo(q.sq.Buf[q.tail*nvme.SQESize:])
	q.tail = (q.tail + 1) % q.depth
	q.t.Write32(nvme.DoorbellOffset(q.qid, false, q.dstrd), uint32(q.tail))
	return sqe.CID
}

// reap waits for the next completion.
func (q *rawQueue) reap() (nvme.CQE, error) {
	p := (*uint32)(unsafe.Pointer(&q.cq.Buf[q.head*nvme.CQESize+12]))
	deadline := time.Now().Add(q.timeout)
	for (atomic.LoadUint32(p)>>16)&1 != q.phase {
		if time.Now().After(deadline) {
			return nvme.CQE{}, errors.Errorf("queue %d: no completion within %v (CSTS %#x)", q.qid, q.timeout, q.t.Read32(nvme.RegCSTS))
		}
		time.Sleep(20 * time.Microsecond)
	}
	cqe, err := nvme.ParseCQE(q.cq.Buf[q.head*nvme.CQESize:])
	if err != nil {
		return cqe, err
	}
	q.head++
	if q.head == q.depth {
		q.head, q.phase = 0, q.phase^1
	}
	q.t.Write32(nvme.DoorbellOffset(q.qid, true, q.dstrd), uint32(q.head))
	return cqe, nil
}

// run posts sqe and waits for its completion.
func (q *rawQueue) run(sqe nvme.SQE) (nvme.CQE, error) {
	cid := q.post(sqe)
	cqe, err := q.reap()
	if err != nil {
		return cqe, err
	}
	if cqe.CID != cid {
		return cqe, errors.Errorf("completion for CID %d, want %d", cqe.CID, cid)
	}
	return cqe, cqe.Err()
}

// waitReady waits for CSTS.RDY to become want, bounded by CAP.TO.
func waitReady(t nvme.Transport, want bool) error {
	to := nvme.CAP(t.Read64(nvme.RegCAP)).TO()
	if to < 2*time.Second {
		to = 2 * time.Second
	}
	deadline := time.Now().Add(to)
	for {
		csts := t.Read32(nvme.RegCSTS)
		if csts == nvme.CSTSUnreachable {
			return errors.New("controller unreachable (CSTS reads all ones)")
		}
		if (csts&nvme.CSTSReady != 0) == want {
			return nil
		}
		if csts&nvme.CSTSFatal != 0 {
			return errors.Errorf("controller fatal status (CSTS %#x)", csts)
		}
		if time.Now().After(deadline) {
			return errors.Errorf("CSTS.RDY did not become %v within %v (CSTS %#x)", want, to, csts)
		}
		time.Sleep(100 * time.Microsecond)
	}
}
