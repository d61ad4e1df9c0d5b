package tcp

import (
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/tcp/internal/pdu"
)

// TestKeepAliveSilentController stops every answer of the controller, the
// admin queue's included: the host's keep-alive notices within its KATO,
// closes the connections and fails the outstanding read — long before the
// driver's own I/O timeout would.
func TestKeepAliveSilentController(t *testing.T) {
	tg, addr := startTarget(t, 1)
	var silent atomic.Bool
	p := newProxy(t, addr, func(n int, b []byte) ([]byte, bool) {
		if silent.Load() {
			return nil, false
		}
		return b, false
	})
	const kato = 300 * time.Millisecond
	tr, err := Dial(p.ln.Addr().String(), tg.NQN(), Options{KeepAlive: kato})
	if err != nil {
		t.Fatal(err)
	}
	c, err := nvme.NewController(tr, nvme.Options{IOTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	qp, err := c.NewQueuePair(8)
	if err != nil {
		t.Fatal(err)
	}
	buf, _ := tr.AllocDMA(4096)
	// Idle for several KATOs: keep-alives keep both ends up.
	time.Sleep(5 * kato)
	if err := readOnce(t, qp, c.Namespaces()[0], buf, 0); err != nil {
		t.Fatalf("read after %v idle with KATO %v: %v", 5*kato, kato, err)
	}
	if e := tr.Err(); e != nil {
		t.Fatalf("connection error while the controller answers: %v", e)
	}
	silent.Store(true)
	start := time.Now()
	err = readOnce(t, qp, c.Namespaces()[0], buf, 1)
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "Transient Transport Error") {
		t.Errorf("read from a silent controller: %v, want Transient Transport Error", err)
	}
	if e := tr.Err(); e == nil || !strings.Contains(e.Error(), "keep-alive timeout") || !strings.Contains(e.Error(), p.ln.Addr().String()) {
		t.Errorf("connection error %v, want a keep-alive timeout naming the controller", e)
	}
	// The requirement is KATO (plus a tick); the bound leaves room for a
	// loaded machine, and stays far below the driver's I/O timeout.
	if took > 10*time.Second {
		t.Errorf("the silent controller was noticed after %v, KATO %v", took, kato)
	}
	t.Logf("noticed after %v", took)
}

// rawConnect sends Fabrics Connect for queue qid on a raw connection and
// returns the controller ID the response carries.
func rawConnect(t *testing.T, c net.Conn, subnqn string, qid, cntlid uint16, kato time.Duration) uint16 {
	t.Helper()
	sqe := make([]byte, 64)
	sqe[0], sqe[4] = opFabrics, fctConnect
	le.PutUint16(sqe[2:], 1)
	sqe[39] = sglInCapsule
	le.PutUint32(sqe[32:], connectDataSize)
	le.PutUint16(sqe[42:], qid)
	le.PutUint16(sqe[44:], 7)
	le.PutUint32(sqe[48:], uint32(kato/time.Millisecond))
	data := make([]byte, connectDataSize)
	le.PutUint16(data[16:], cntlid)
	putNQN(data[256:512], subnqn)
	putNQN(data[512:768], "nqn.2014-08.org.nvmexpress:uuid:raw-host")
	cqe := rawCommand(t, c, sqe, data)
	if st := le.Uint16(cqe[14:]) >> 1; st != 0 {
		t.Fatalf("Connect queue %d: status %#x", qid, st)
	}
	return uint16(le.Uint32(cqe[0:]))
}

// rawCommand sends one command capsule (with in-capsule data) and reads
// its response.
func rawCommand(t *testing.T, c net.Conn, sqe, data []byte) []byte {
	t.Helper()
	b := make([]byte, pdu.CapsuleCmdLen+len(data))
	pdu.PutCapsuleCmd(b, sqe, len(data), false, false)
	copy(b[pdu.CapsuleCmdLen:], data)
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := make([]byte, pdu.CapsuleRespLen)
	if _, err := io.ReadFull(c, r); err != nil || r[0] != pdu.TypeCapsuleResp {
		t.Fatalf("response: %v, %x", err, r)
	}
	return r[pdu.CommonLen:]
}

// TestKeepAliveSilentHost connects a host that asks for a short KATO, keeps
// it alive with Keep Alive commands for several KATOs, then falls silent:
// the target tears the association down — both connections closed, the
// controller and its queues gone — after KATO and not before.
func TestKeepAliveSilentHost(t *testing.T) {
	var mu sync.Mutex
	var logged []error
	tg, err := NewTarget(TargetConfig{
		Namespaces: []Namespace{newMemNS(512, 64)},
		Log: func(err error) {
			mu.Lock()
			logged = append(logged, err)
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tg.Run(ln)
	defer tg.Close()
	addr := ln.Addr().String()

	const kato = 300 * time.Millisecond
	admin := rawHost(t, addr)
	defer admin.Close()
	cntlid := rawConnect(t, admin, tg.NQN(), 0, 0xffff, kato)
	cc := make([]byte, 64)
	cc[0], cc[4] = opFabrics, fctPropertySet
	le.PutUint32(cc[44:], nvme.RegCC)
	le.PutUint64(cc[48:], nvme.CCEnable)
	if st := le.Uint16(rawCommand(t, admin, cc, nil)[14:]) >> 1; st != 0 {
		t.Fatalf("Property Set CC: status %#x", st)
	}
	io1 := rawHost(t, addr)
	defer io1.Close()
	rawConnect(t, io1, tg.NQN(), 1, cntlid, 0)

	ka := make([]byte, 64)
	ka[0] = adminKeepAlive
	var silentSince time.Time
	for end := time.Now().Add(4 * kato); time.Now().Before(end); time.Sleep(kato / 4) {
		rawCommand(t, admin, ka, nil)
		silentSince = time.Now()
	}
	tg.mu.Lock()
	ctrl := tg.ctrls[cntlid]
	tg.mu.Unlock()
	if ctrl == nil {
		t.Fatalf("controller %d gone while the host sent Keep Alive every %v (KATO %v)", cntlid, kato/4, kato)
	}
	for _, c := range []net.Conn{admin, io1} {
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		n, err := io.Copy(io.Discard, c)
		if err != nil {
			t.Errorf("%s: %v after %d bytes, want the target to close the connection", c.LocalAddr(), err, n)
		}
	}
	if took := time.Since(silentSince); took < kato {
		t.Errorf("association torn down %v after the last command, before KATO %v", took, kato)
	} else {
		t.Logf("torn down after %v", took)
	}
	tg.mu.Lock()
	_, still := tg.ctrls[cntlid]
	tg.mu.Unlock()
	if still || !ctrl.dead.Load() {
		t.Errorf("controller %d still registered after its keep-alive timeout", cntlid)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctrl.mu.Lock()
		n := len(ctrl.queues)
		ctrl.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d queues of the expired controller not freed", n)
		}
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(logged) != 1 || !strings.Contains(logged[0].Error(), "keep-alive timeout") {
		t.Errorf("target logged %v, want one keep-alive timeout", logged)
	}
}
