package tcp

import (
	"bytes"
	"io"
	"math/rand"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/tcp/internal/pdu"
)

// rw runs one write or read of blocks at lba through qp and waits (bounded).
func rw(t *testing.T, qp *nvme.QueuePair, ns *nvme.Namespace, write bool, lba uint64, blocks uint32, buf *nvme.DMA) error {
	t.Helper()
	var got error
	done := false
	cb := nvme.CompleterFunc(func(_, _ uint64, err error) { got, done = err, true })
	var err error
	if write {
		err = qp.Write(ns, lba, blocks, buf, 0, cb, 0)
	} else {
		err = qp.Read(ns, lba, blocks, buf, 0, cb, 0)
	}
	if err != nil {
		return err
	}
	deadline := time.Now().Add(20 * time.Second)
	for !done {
		if qp.Process(0) == 0 {
			if time.Now().After(deadline) {
				t.Fatal("I/O did not complete in 20 s")
			}
			time.Sleep(20 * time.Microsecond)
		}
	}
	return got
}

// TestMultipleR2T writes transfers of up to 128 KiB to a target that takes
// at most 4 KiB per H2CData PDU, so that each write is fetched by many
// R2Ts, several outstanding at once (the host's MAXR2T is 4), and reads
// them back, with and without digests.
func TestMultipleR2T(t *testing.T) {
	for _, dg := range []bool{false, true} {
		tg, addr := startTargetWith(t, TargetConfig{MaxH2CData: 4096})
		var r2ts, maxIndex atomic.Int32
		p := newProxy(t, addr, func(n int, b []byte) ([]byte, bool) {
			if b[0] == pdu.TypeR2T {
				r2ts.Add(1)
				d, _ := pdu.ParseData(b)
				if k := int32(d.TTag & 7); k > maxIndex.Load() {
					maxIndex.Store(k)
				}
			}
			return b, false
		})
		tr, err := Dial(p.ln.Addr().String(), tg.NQN(), Options{HeaderDigest: dg, DataDigest: dg})
		if err != nil {
			t.Fatal(err)
		}
		c, err := nvme.NewController(tr, nvme.Options{})
		if err != nil {
			t.Fatal(err)
		}
		qp, err := c.NewQueuePair(8)
		if err != nil {
			t.Fatal(err)
		}
		ns := c.Namespaces()[0]
		wbuf, _ := tr.AllocDMA(128 << 10)
		rbuf, _ := tr.AllocDMA(128 << 10)
		rng := rand.New(rand.NewSource(1))
		want := 0
		for i, size := range []int{20 << 10, 32 << 10, 36 << 10, 128 << 10, 64<<10 + 512} {
			rng.Read(wbuf.Buf[:size])
			blocks := uint32(size) / ns.BlockSize
			lba := uint64(i * 256)
			if err := rw(t, qp, ns, true, lba, blocks, wbuf); err != nil {
				t.Fatalf("digests %v: write of %d bytes: %v", dg, size, err)
			}
			if err := rw(t, qp, ns, false, lba, blocks, rbuf); err != nil {
				t.Fatalf("digests %v: read of %d bytes: %v (%v)", dg, size, err, tr.Err())
			}
			if !bytes.Equal(wbuf.Buf[:size], rbuf.Buf[:size]) {
				t.Fatalf("digests %v: %d bytes read back differ", dg, size)
			}
			want += (size - 1) / 4096 // in-capsule data takes up to 16 KiB; these are larger
		}
		if got := int(r2ts.Load()); got != want+5 {
			t.Errorf("digests %v: %d R2Ts, want %d (one per 4 KiB)", dg, got, want+5)
		}
		if k := maxIndex.Load(); k < 1 || k >= hostMaxR2T {
			t.Errorf("digests %v: highest R2T index %d: want several outstanding, at most %d", dg, k, hostMaxR2T)
		}
		if e := tr.Err(); e != nil {
			t.Errorf("digests %v: connection error %v", dg, e)
		}
		c.Close()
	}
}

// TestBadR2T sends the host R2Ts that overlap, skip ahead or exceed its
// MAXR2T: the connection closes with an error naming the R2T and the write
// fails with Transient Transport Error.
func TestBadR2T(t *testing.T) {
	r2t := func(b []byte, off, n uint32, ttag uint16) []byte {
		d, _ := pdu.ParseData(b)
		d.Offset, d.Length, d.TTag = off, n, ttag
		out := make([]byte, pdu.R2TLen)
		pdu.PutR2T(out, d, false)
		return out
	}
	cases := []struct {
		name   string
		mangle func(p []byte) ([]byte, bool)
		want   string
	}{
		{"skips ahead", func(p []byte) ([]byte, bool) { return r2t(p, 512, 4096, 0), false }, "expected offset 0"},
		{"overlaps", func(p []byte) ([]byte, bool) {
			return append(r2t(p, 0, 4096, 0), r2t(p, 2048, 4096, 1)...), false
		}, "offset 2048, 4096 bytes; expected offset 4096"},
		{"past the data", func(p []byte) ([]byte, bool) { return r2t(p, 0, 64<<10, 0), false }, "within 20480 bytes"},
		{"over MAXR2T", func(p []byte) ([]byte, bool) {
			var out []byte
			for i := uint32(0); i <= hostMaxR2T; i++ {
				out = append(out, r2t(p, i*512, 512, uint16(i))...)
			}
			return out, false
		}, "over the MAXR2T of 4"},
	}
	tg, addr := startTargetWith(t, TargetConfig{MaxH2CData: 4096})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var armed atomic.Bool
			p := newProxy(t, addr, once(&armed, pdu.TypeR2T, tc.mangle))
			tr, err := Dial(p.ln.Addr().String(), tg.NQN(), Options{})
			if err != nil {
				t.Fatal(err)
			}
			c, err := nvme.NewController(tr, nvme.Options{IOTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			qp, err := c.NewQueuePair(4)
			if err != nil {
				t.Fatal(err)
			}
			ns := c.Namespaces()[0]
			buf, _ := tr.AllocDMA(20 << 10)
			armed.Store(true)
			err = rw(t, qp, ns, true, 0, uint32(20<<10)/ns.BlockSize, buf)
			if err == nil || !strings.Contains(err.Error(), "Transient Transport Error") {
				t.Errorf("write with a bad R2T: %v, want Transient Transport Error", err)
			}
			if e := tr.Err(); e == nil || !strings.Contains(e.Error(), tc.want) {
				t.Errorf("connection error %v, want one saying %q", e, tc.want)
			}
		})
	}
}

// rawIOQueue connects a raw host with MAXR2T maxR2T to the target, enables
// the controller and returns an I/O queue's connection.
func rawIOQueue(t *testing.T, addr, nqn string, maxR2T uint32) (admin, io1 net.Conn) {
	t.Helper()
	admin = rawHost(t, addr)
	cntlid := rawConnect(t, admin, nqn, 0, 0xffff, 0)
	cc := make([]byte, 64)
	cc[0], cc[4] = opFabrics, fctPropertySet
	le.PutUint32(cc[44:], nvme.RegCC)
	le.PutUint64(cc[48:], nvme.CCEnable)
	rawCommand(t, admin, cc, nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var b [pdu.ICLen]byte
	pdu.PutICReq(b[:], pdu.ICReq{MaxR2T: maxR2T})
	c.Write(b[:])
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != pdu.TypeICResp {
		t.Fatalf("ICResp: %v", err)
	}
	rawConnect(t, c, nqn, 1, cntlid, 0)
	return admin, c
}

// readPDU reads one PDU (without digests).
func readPDU(t *testing.T, c net.Conn) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	h := make([]byte, 8)
	if _, err := io.ReadFull(c, h); err != nil {
		t.Fatalf("reading a PDU: %v", err)
	}
	b := make([]byte, le.Uint32(h[4:]))
	copy(b, h)
	if _, err := io.ReadFull(c, b[8:]); err != nil {
		t.Fatalf("reading a PDU: %v", err)
	}
	return b
}

// TestTargetR2T drives the target's R2Ts from a raw host whose MAXR2T is
// 2: a 16 KiB write to a target taking 4 KiB per PDU gets two R2Ts at once
// and the next as each completes; data may answer the R2Ts in any order,
// but within an R2T it must come in order, without overlap, and end with
// LAST — otherwise the target terminates the connection.
func TestTargetR2T(t *testing.T) {
	tg, addr := startTargetWith(t, TargetConfig{MaxH2CData: 4096})
	write := func(c net.Conn) {
		sqe := make([]byte, 64)
		sqe[0] = nvme.OpWrite
		le.PutUint16(sqe[2:], 3)
		le.PutUint32(sqe[4:], 1)
		sqe[1] = nvme.PSDTSGL
		sqe[39] = sglTransport
		le.PutUint32(sqe[32:], 16<<10)
		le.PutUint16(sqe[48:], 31) // 32 blocks of 512
		b := make([]byte, pdu.CapsuleCmdLen)
		pdu.PutCapsuleCmd(b, sqe, 0, false, false)
		c.Write(b)
	}
	r2t := func(c net.Conn) pdu.Data {
		b := readPDU(t, c)
		if b[0] != pdu.TypeR2T {
			t.Fatalf("PDU type %s, want R2T", pdu.TypeName(b[0]))
		}
		d, _ := pdu.ParseData(b)
		return d
	}
	data := func(c net.Conn, ttag uint16, off, n uint32, last bool) {
		b := make([]byte, pdu.DataLen+int(n))
		flags := uint8(0)
		if last {
			flags = pdu.FlagLast
		}
		pdu.PutDataPDU(b, pdu.TypeH2CData, flags, pdu.Data{CCCID: 3, TTag: ttag, Offset: off, Length: n}, false, false)
		for i := range b[pdu.DataLen:] {
			b[pdu.DataLen+i] = byte(off + uint32(i))
		}
		c.Write(b)
	}

	t.Run("in any order", func(t *testing.T) {
		admin, c := rawIOQueue(t, addr, tg.NQN(), 1)
		defer admin.Close()
		defer c.Close()
		write(c)
		a, b := r2t(c), r2t(c)
		if a.Offset != 0 || b.Offset != 4096 || a.Length != 4096 || b.Length != 4096 || a.TTag == b.TTag {
			t.Fatalf("R2Ts %+v %+v, want two of 4096 bytes at 0 and 4096", a, b)
		}
		// The second first, in two PDUs; then the first.
		data(c, b.TTag, 4096, 1024, false)
		data(c, b.TTag, 5120, 3072, true)
		d := r2t(c)
		if d.Offset != 8192 || d.Length != 4096 {
			t.Fatalf("third R2T %+v, want 4096 bytes at 8192", d)
		}
		data(c, a.TTag, 0, 4096, true)
		e := r2t(c)
		if e.Offset != 12288 {
			t.Fatalf("fourth R2T %+v, want offset 12288", e)
		}
		data(c, e.TTag, 12288, 4096, true)
		data(c, d.TTag, 8192, 4096, true)
		resp := readPDU(t, c)
		if resp[0] != pdu.TypeCapsuleResp || le.Uint16(resp[pdu.CommonLen+14:])>>1 != 0 {
			t.Fatalf("answer %x, want a successful CapsuleResp", resp)
		}
		got := tg.cfg.Namespaces[0].(*memNS).data[:16<<10]
		for i := range got {
			if got[i] != byte(i) {
				t.Fatalf("byte %d written as %d, want %d", i, got[i], byte(i))
			}
		}
	})
	bad := []struct {
		name string
		send func(c net.Conn, a, b pdu.Data)
		fes  uint16
	}{
		{"gap", func(c net.Conn, a, b pdu.Data) { data(c, a.TTag, 512, 512, false) }, pdu.FESOutOfRange},
		{"overlap", func(c net.Conn, a, b pdu.Data) {
			data(c, a.TTag, 0, 2048, false)
			data(c, a.TTag, 1024, 2048, false)
		}, pdu.FESOutOfRange},
		{"another R2T's range", func(c net.Conn, a, b pdu.Data) { data(c, a.TTag, 4096, 4096, true) }, pdu.FESOutOfRange},
		{"past its R2T", func(c net.Conn, a, b pdu.Data) {
			data(c, a.TTag, 0, 2048, false)
			data(c, a.TTag, 2048, 4096, true)
		}, pdu.FESOutOfRange},
		{"LAST too early", func(c net.Conn, a, b pdu.Data) { data(c, a.TTag, 0, 2048, true) }, pdu.FESInvalidHeader},
		{"no LAST", func(c net.Conn, a, b pdu.Data) { data(c, b.TTag, 4096, 4096, false) }, pdu.FESInvalidHeader},
		{"an R2T not sent", func(c net.Conn, a, b pdu.Data) { data(c, a.TTag|5, 0, 512, false) }, pdu.FESInvalidHeader},
		{"twice", func(c net.Conn, a, b pdu.Data) {
			data(c, a.TTag, 0, 4096, true)
			r2t(c) // the next R2T, which may reuse the tag
			data(c, a.TTag, 0, 4096, true)
		}, pdu.FESOutOfRange},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			admin, c := rawIOQueue(t, addr, tg.NQN(), 1)
			defer admin.Close()
			defer c.Close()
			write(c)
			a, b := r2t(c), r2t(c)
			tc.send(c, a, b)
			p := readPDU(t, c)
			if p[0] != pdu.TypeC2HTermReq {
				t.Fatalf("answer of type %s, want C2HTermReq", pdu.TypeName(p[0]))
			}
			if tr, _ := pdu.ParseTerm(p); tr.FES != tc.fes {
				t.Errorf("FES %d (%s), want %d (%s)", tr.FES, pdu.FESName(tr.FES), tc.fes, pdu.FESName(tc.fes))
			}
		})
	}
}
