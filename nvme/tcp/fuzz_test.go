package tcp

import (
	"testing"

	"github.com/bpfblk/bpfblk/nvme/tcp/internal/pdu"
)

// seeds returns well-formed PDU streams for the fuzzers to start from.
func seeds() [][]byte {
	var out [][]byte
	b := make([]byte, 4096)
	sqe := make([]byte, 64)
	sqe[0], sqe[39] = 0x02, sglTransport
	le.PutUint32(sqe[32:], 512)
	le.PutUint32(sqe[4:], 1)
	n := pdu.PutCapsuleCmd(b, sqe, 0, false, false)
	out = append(out, append([]byte(nil), b[:n]...))
	cqe := make([]byte, 16)
	n = pdu.PutCapsuleResp(b, cqe, false)
	out = append(out, append([]byte(nil), b[:n]...))
	h := pdu.PutDataPDU(b, pdu.TypeC2HData, pdu.FlagLast, pdu.Data{CCCID: 1, Length: 512}, false, false)
	out = append(out, append([]byte(nil), b[:h+512]...))
	n = pdu.PutR2T(b, pdu.Data{CCCID: 2, Length: 4096}, false)
	out = append(out, append([]byte(nil), b[:n]...))
	h = pdu.PutDataPDU(b, pdu.TypeH2CData, pdu.FlagLast, pdu.Data{CCCID: 0, Length: 64}, false, false)
	out = append(out, append([]byte(nil), b[:h+64]...))
	n = pdu.PutTerm(b, pdu.TypeC2HTermReq, pdu.FESOutOfRange, 3, b[:8])
	out = append(out, append([]byte(nil), b[:n]...))
	return out
}

// feed pushes data through a conn's decoder in pieces of the given size.
func feed(c *conn, data []byte, piece int) {
	if piece <= 0 {
		piece = 1
	}
	for len(data) > 0 && c.err == nil {
		k := min(piece, len(data), len(c.rx)-c.rxHi)
		if k == 0 {
			c.rxLo, c.rxHi = 0, 0
			continue
		}
		copy(c.rx[c.rxHi:], data[:k])
		c.rxHi += k
		data = data[k:]
		c.decode()
		if c.rxLo == c.rxHi {
			c.rxLo, c.rxHi = 0, 0
		}
	}
}

// FuzzHostParser feeds arbitrary controller-to-host bytes to a host queue
// with a read, a write and an internal command outstanding: it must fail
// the connection or accept, never panic, never write outside the buffers.
func FuzzHostParser(f *testing.F) {
	for _, s := range seeds() {
		f.Add(s, uint8(7), false)
		f.Add(s, uint8(200), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, piece uint8, digests bool) {
		tr := &Transport{name: "fuzz", cqs: map[uint16]cqRing{}}
		q := &hqueue{t: tr, qid: 1, depth: 4, phase: 1, cmds: make([]hcmd, 5), r2tq: make([]uint16, 5*hostMaxR2T), maxH2C: 4096}
		q.sq, q.cq = make([]byte, 4*64), make([]byte, 4*16)
		q.c = &conn{name: "fuzz", side: pdu.Host, h: q, rx: make([]byte, 1024), tx: make([]byte, 0, 1<<20), init: true,
			lim: pdu.Limits{HDGST: digests, DDGST: digests}}
		q.cmds[1] = hcmd{busy: true, dcid: 1, data: make([]byte, 512)}
		q.cmds[2] = hcmd{busy: true, dcid: 2, write: true, data: make([]byte, 4096)}
		q.cmds[4] = hcmd{busy: true, internal: true}
		feed(q.c, data, int(piece))
		q.sendData()
		if q.c.err != nil {
			q.fail()
		}
	})
}

// FuzzTargetParser feeds arbitrary host-to-controller bytes to a target
// connection (which answers ICReq, Connect and the commands it decodes).
func FuzzTargetParser(f *testing.F) {
	var ic [pdu.ICLen]byte
	pdu.PutICReq(ic[:], pdu.ICReq{MaxR2T: 3})
	for _, s := range seeds() {
		f.Add(append(append([]byte(nil), ic[:]...), s...), uint8(13))
	}
	f.Fuzz(func(t *testing.T, data []byte, piece uint8) {
		tg, err := NewTarget(TargetConfig{Namespaces: []Namespace{newMemNS(512, 64)}, MaxH2CData: 4096})
		if err != nil {
			t.Fatal(err)
		}
		w := tg.workers[0]
		q := &tqueue{w: w}
		q.c = &conn{name: "fuzz", side: pdu.Controller, h: q, rx: make([]byte, 1024), tx: make([]byte, 0, 1<<20),
			lim: pdu.Limits{MaxData: 4096}}
		q.setDepth(1)
		feed(q.c, data, int(piece))
		for i := 0; i < 4; i++ {
			for _, ch := range w.chans {
				if ch != nil {
					ch.Poll()
				}
			}
			q.progress()
			q.c.tx = q.c.tx[:0]
		}
		if q.ctrl != nil {
			tg.dropCtrl(q.ctrl)
		}
	})
}
