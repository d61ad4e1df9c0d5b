package tcp

import (
	"encoding/binary"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/tcp/internal/pdu"
	"github.com/pkg/errors"
)

// proxy sits between a host and a target and lets a test rewrite the
// controller-to-host PDUs of I/O connections.
type proxy struct {
	ln     net.Listener
	target string
	conns  atomic.Int32
	// mangle sees every controller-to-host PDU of connection n (0 is the
	// admin queue) and returns what to send instead (nil: nothing) and
	// whether to close the connection after it.
	mangle func(n int, p []byte) ([]byte, bool)
	mu     sync.Mutex
	open   []net.Conn
}

func newProxy(t *testing.T, target string, mangle func(int, []byte) ([]byte, bool)) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, mangle: mangle}
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.open {
			c.Close()
		}
		p.mu.Unlock()
	})
	return p
}

func (p *proxy) accept() {
	for {
		h, err := p.ln.Accept()
		if err != nil {
			return
		}
		c, err := net.Dial("tcp", p.target)
		if err != nil {
			h.Close()
			continue
		}
		p.mu.Lock()
		p.open = append(p.open, h, c)
		p.mu.Unlock()
		n := int(p.conns.Add(1) - 1)
		go func() { io.Copy(c, h); c.Close() }()
		go func() {
			defer h.Close()
			for {
				hdr := make([]byte, 8)
				if _, err := io.ReadFull(c, hdr); err != nil {
					return
				}
				plen := binary.LittleEndian.Uint32(hdr[4:])
				if plen < 8 || plen > 1<<20 {
					return
				}
				b := make([]byte, plen)
				copy(b, hdr)
				if _, err := io.ReadFull(c, b[8:]); err != nil {
					return
				}
				out, closeIt := p.mangle(n, b)
				if len(out) > 0 {
					if _, err := h.Write(out); err != nil {
						return
					}
				}
				if closeIt {
					return
				}
			}
		}()
	}
}

// once applies f to the first PDU of type typ on an I/O connection after
// armed is set.
func once(armed *atomic.Bool, typ uint8, f func(p []byte) ([]byte, bool)) func(int, []byte) ([]byte, bool) {
	var done atomic.Bool
	return func(n int, p []byte) ([]byte, bool) {
		if n > 0 && p[0] == typ && armed.Load() && done.CompareAndSwap(false, true) {
			return f(p)
		}
		return p, false
	}
}

// readOnce reads one block through qp and waits (bounded) for the result.
func readOnce(t *testing.T, qp *nvme.QueuePair, ns *nvme.Namespace, buf *nvme.DMA, lba uint64) error {
	t.Helper()
	var got error
	done := false
	cb := nvme.CompleterFunc(func(_, _ uint64, err error) { got, done = err, true })
	if err := qp.Read(ns, lba, 1, buf, 0, cb, 0); err != nil {
		return err
	}
	deadline := time.Now().Add(20 * time.Second)
	for !done {
		if qp.Process(0) == 0 {
			if time.Now().After(deadline) {
				t.Fatal("read did not complete in 20 s")
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
	return got
}

// TestBadController sends the host malformed, truncated and unexpected
// PDUs: the connection closes with an error naming what arrived, the
// outstanding I/Os complete with Transient Transport Error, another host
// of the target is unaffected, and the driver recovers by resetting the
// controller, which reconnects.
func TestBadController(t *testing.T) {
	cases := []struct {
		name   string
		typ    uint8
		mangle func(p []byte) ([]byte, bool)
		want   string
	}{
		{"unknown type", pdu.TypeCapsuleResp, func(p []byte) ([]byte, bool) { p[0] = 0x0f; return p, false }, "unknown PDU type 0xf"},
		{"wrong hlen", pdu.TypeCapsuleResp, func(p []byte) ([]byte, bool) { p[2] = 30; return p, false }, "hlen 30"},
		{"unknown CID", pdu.TypeCapsuleResp, func(p []byte) ([]byte, bool) { le.PutUint16(p[8+12:], 5); return p, false }, "CapsuleResp for command 5, which is not outstanding"},
		{"data offset", pdu.TypeC2HData, func(p []byte) ([]byte, bool) { le.PutUint32(p[12:], 64); return p, false }, "C2HData for command 0 at offset 64"},
		{"data past the buffer", pdu.TypeC2HData, func(p []byte) ([]byte, bool) {
			q := make([]byte, len(p)+512)
			copy(q, p)
			le.PutUint32(q[4:], uint32(len(q)))
			le.PutUint32(q[16:], uint32(len(q)-24))
			return q, false
		}, "within 512 bytes"},
		{"truncated", pdu.TypeC2HData, func(p []byte) ([]byte, bool) { return p[:10], true }, "peer closed the connection after"},
		{"termination", pdu.TypeCapsuleResp, func(p []byte) ([]byte, bool) {
			b := make([]byte, 64)
			n := pdu.PutTerm(b, pdu.TypeC2HTermReq, pdu.FESOutOfRange, 7, nil)
			return b[:n], false
		}, "controller terminated the connection: data transfer out of range"},
		{"response to a write with data", pdu.TypeCapsuleResp, func(p []byte) ([]byte, bool) {
			q := make([]byte, 64)
			pdu.PutDataPDU(q, pdu.TypeC2HData, pdu.FlagLast, pdu.Data{CCCID: 0, Length: 40}, false, false)
			return q, false
		}, "C2HData for command 0, which reads no data"},
	}
	tg, addr := startTarget(t, 2)
	// A host of the same target that must not notice any of this.
	other, err := Dial(addr, tg.NQN(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	oc, err := nvme.NewController(other, nvme.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()
	oqp, err := oc.NewQueuePair(8)
	if err != nil {
		t.Fatal(err)
	}
	obuf, _ := other.AllocDMA(4096)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var armed atomic.Bool
			p := newProxy(t, addr, once(&armed, tc.typ, tc.mangle))
			tr, err := Dial(p.ln.Addr().String(), tg.NQN(), Options{})
			if err != nil {
				t.Fatal(err)
			}
			c, err := nvme.NewController(tr, nvme.Options{IOTimeout: 2 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			qp, err := c.NewQueuePair(8)
			if err != nil {
				t.Fatal(err)
			}
			ns := c.Namespaces()[0]
			buf, _ := tr.AllocDMA(8192)
			armed.Store(true)
			var err1 error
			if strings.HasPrefix(tc.name, "response to a write") {
				done := false
				cb := nvme.CompleterFunc(func(_, _ uint64, err error) { err1, done = err, true })
				if err := qp.Write(ns, 3, 1, buf, 0, cb, 0); err != nil {
					t.Fatal(err)
				}
				for deadline := time.Now().Add(20 * time.Second); !done && time.Now().Before(deadline); {
					qp.Process(0)
				}
			} else {
				err1 = readOnce(t, qp, ns, buf, 1)
			}
			if err1 == nil || !strings.Contains(err1.Error(), "Transient Transport Error") {
				t.Errorf("I/O on the broken connection: %v, want Transient Transport Error", err1)
			}
			if e := tr.Err(); e == nil || !strings.Contains(e.Error(), tc.want) {
				t.Errorf("connection error %v, want one saying %q", e, tc.want)
			}
			if err := readOnce(t, oqp, oc.Namespaces()[0], obuf, 1); err != nil {
				t.Errorf("another host's read: %v", err)
			}
			// The driver resets the controller (CSTS.CFS) and reconnects.
			var err2 error
			for i := 0; i < 50; i++ {
				if err2 = readOnce(t, qp, ns, buf, 2); err2 == nil {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err2 != nil {
				t.Errorf("no recovery after the bad PDU: %v", err2)
			}
		})
	}
}

// TestDataDigestMismatch corrupts a data byte of a C2HData PDU on a
// connection with digests: the host notices, closes the connection and
// fails the read.
func TestDataDigestMismatch(t *testing.T) {
	tg, addr := startTarget(t, 1)
	var armed atomic.Bool
	p := newProxy(t, addr, once(&armed, pdu.TypeC2HData, func(b []byte) ([]byte, bool) {
		b[int(b[3])+5] ^= 0x40 // a data byte, after the header and its digest
		return b, false
	}))
	tr, err := Dial(p.ln.Addr().String(), tg.NQN(), Options{HeaderDigest: true, DataDigest: true})
	if err != nil {
		t.Fatal(err)
	}
	c, err := nvme.NewController(tr, nvme.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	qp, err := c.NewQueuePair(4)
	if err != nil {
		t.Fatal(err)
	}
	buf, _ := tr.AllocDMA(4096)
	armed.Store(true)
	if err := readOnce(t, qp, c.Namespaces()[0], buf, 0); err == nil || !strings.Contains(err.Error(), "Transient Transport Error") {
		t.Errorf("read with a corrupt data digest: %v, want Transient Transport Error", err)
	}
	if e := tr.Err(); !errors.Is(e, pdu.ErrDigest) || !strings.Contains(e.Error(), "C2HData data digest") {
		t.Errorf("connection error %v, want a C2HData data digest mismatch", e)
	}
}

// TestSilentController stops forwarding the controller's answers on the I/O
// connection: the read times out instead of hanging.
func TestSilentController(t *testing.T) {
	tg, addr := startTarget(t, 1)
	var silent atomic.Bool
	p := newProxy(t, addr, func(n int, b []byte) ([]byte, bool) {
		if n > 0 && silent.Load() {
			return nil, false
		}
		return b, false
	})
	tr, err := Dial(p.ln.Addr().String(), tg.NQN(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := nvme.NewController(tr, nvme.Options{IOTimeout: 200 * time.Millisecond, AdminTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	qp, err := c.NewQueuePair(8)
	if err != nil {
		t.Fatal(err)
	}
	buf, _ := tr.AllocDMA(4096)
	silent.Store(true)
	start := time.Now()
	err = readOnce(t, qp, c.Namespaces()[0], buf, 0)
	if !errors.Is(err, nvme.ErrTimeout) {
		t.Fatalf("read from a silent controller: %v, want a timeout", err)
	}
	t.Logf("timed out after %v", time.Since(start))
}

// rawHost connects to the target and exchanges ICReq/ICResp.
func rawHost(t *testing.T, addr string) net.Conn {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var b [pdu.ICLen]byte
	pdu.PutICReq(b[:], pdu.ICReq{})
	if _, err := c.Write(b[:]); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != pdu.TypeICResp {
		t.Fatalf("ICResp: %v, type %#x", err, b[0])
	}
	return c
}

// TestBadHost sends the target malformed PDUs: it answers with a
// C2HTermReq naming the fault and closes the connection, and keeps
// serving other hosts.
func TestBadHost(t *testing.T) {
	tg, addr := startTarget(t, 1)
	cases := []struct {
		name string
		pdu  func() []byte
		fes  uint16
	}{
		{"wrong hlen", func() []byte {
			b := make([]byte, 80)
			pdu.PutHeader(b, pdu.Header{Type: pdu.TypeCapsuleCmd, HLen: 80, PLen: 80})
			return b
		}, pdu.FESInvalidHeader},
		{"unknown type", func() []byte {
			b := make([]byte, 24)
			pdu.PutHeader(b, pdu.Header{Type: 0x0d, HLen: 24, PLen: 24})
			return b
		}, pdu.FESInvalidHeader},
		{"controller PDU", func() []byte {
			b := make([]byte, 24)
			pdu.PutCapsuleResp(b, make([]byte, 16), false)
			return b
		}, pdu.FESInvalidHeader},
		{"data for no command", func() []byte {
			b := make([]byte, 24+64)
			pdu.PutDataPDU(b, pdu.TypeH2CData, pdu.FlagLast, pdu.Data{CCCID: 9, TTag: 3, Length: 64}, false, false)
			return b
		}, pdu.FESInvalidHeader},
		{"oversized data", func() []byte {
			b := make([]byte, 24)
			pdu.PutDataPDU(b, pdu.TypeH2CData, pdu.FlagLast, pdu.Data{Length: 1 << 30}, false, false)
			return b
		}, pdu.FESLimitExceeded},
		{"capsule data that its SGL does not describe", func() []byte {
			sqe := make([]byte, 64)
			sqe[0], sqe[39] = nvme.OpWrite, sglTransport
			b := make([]byte, 72+512)
			pdu.PutCapsuleCmd(b, sqe, 512, false, false)
			return b
		}, pdu.FESInvalidHeader},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := rawHost(t, addr)
			defer c.Close()
			if _, err := c.Write(tc.pdu()); err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("after the bad PDU: %v (want the target to close)", err)
			}
			if len(b) < pdu.TermLen || b[0] != pdu.TypeC2HTermReq {
				t.Fatalf("target answered %x, want a C2HTermReq", b)
			}
			tr, _ := pdu.ParseTerm(b)
			if tr.FES != tc.fes {
				t.Errorf("FES %d (%s), want %d (%s)", tr.FES, pdu.FESName(tr.FES), tc.fes, pdu.FESName(tc.fes))
			}
		})
	}
	// A host that closes in the middle of a PDU, and one that never sends
	// ICReq, do not disturb a well-behaved one.
	c := rawHost(t, addr)
	c.Write([]byte{pdu.TypeCapsuleCmd, 0, 72})
	c.Close()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	tr, err := Dial(addr, tg.NQN(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctrl, err := nvme.NewController(tr, nvme.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ctrl.Close()
	qp, err := ctrl.NewQueuePair(4)
	if err != nil {
		t.Fatal(err)
	}
	buf, _ := tr.AllocDMA(4096)
	if err := readOnce(t, qp, ctrl.Namespaces()[0], buf, 0); err != nil {
		t.Errorf("good host after bad ones: %v", err)
	}
}
