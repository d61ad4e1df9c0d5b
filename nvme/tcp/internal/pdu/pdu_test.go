package pdu

import (
	"bytes"
	"testing"
)

func TestCRCKnownValue(t *testing.T) {
	// The CRC32C check value of "123456789" (RFC 3720, appendix B.4).
	if got := CRC([]byte("123456789")); got != 0xe3069283 {
		t.Fatalf("CRC = %#x, want 0xe3069283", got)
	}
}

func TestICRoundTrip(t *testing.T) {
	b := make([]byte, ICLen)
	PutICReq(b, ICReq{HPDA: 0, HDGST: true, DDGST: false, MaxR2T: 3})
	h, err := ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := Check(h, Controller, Limits{}, false); err != nil {
		t.Fatal(err)
	}
	r, err := ParseICReq(b)
	if err != nil || !r.HDGST || r.DDGST || r.MaxR2T != 3 {
		t.Fatalf("ICReq = %+v, %v", r, err)
	}
	if _, _, _, err := Check(h, Host, Limits{}, false); err == nil {
		t.Fatal("host accepted an ICReq")
	}
	if _, _, _, err := Check(h, Controller, Limits{}, true); err == nil {
		t.Fatal("ICReq accepted after initialisation")
	}
	PutICResp(b, ICResp{MaxH2CData: 1 << 17, DDGST: true})
	resp, err := ParseICResp(b)
	if err != nil || resp.MaxH2CData != 1<<17 || !resp.DDGST {
		t.Fatalf("ICResp = %+v, %v", resp, err)
	}
	b[12] = 1 // MAXH2CDATA below 4096
	if _, err := ParseICResp(b); err == nil {
		t.Fatal("ICResp with a tiny MAXH2CDATA accepted")
	}
}

func TestCapsuleAndDataChecks(t *testing.T) {
	sqe := bytes.Repeat([]byte{0xab}, 64)
	b := make([]byte, 256)
	for _, dg := range []bool{false, true} {
		lim := Limits{HDGST: dg, DDGST: dg, MaxData: 8192}
		pdo := PutCapsuleCmd(b, sqe, 512, dg, dg)
		h, _ := ParseHeader(b)
		hdr, data, _, err := Check(h, Controller, lim, true)
		if err != nil || hdr != pdo || data != 512 {
			t.Fatalf("digests %v: Check = %d, %d, %v; want %d, 512", dg, hdr, data, err, pdo)
		}
		if dg {
			if err := CheckHeaderDigest(b, CapsuleCmdLen); err != nil {
				t.Fatal(err)
			}
			b[9] ^= 1
			if err := CheckHeaderDigest(b, CapsuleCmdLen); err == nil {
				t.Fatal("corrupt header digest accepted")
			}
		}
		if _, _, _, err := Check(h, Controller, Limits{HDGST: !dg, DDGST: !dg}, true); err == nil {
			t.Fatal("digest flags that were not negotiated accepted")
		}
		// Data over the limit.
		hdrLen := PutDataPDU(b, TypeH2CData, FlagLast, Data{Length: 16384}, dg, dg)
		h, _ = ParseHeader(b)
		if _, _, fes, err := Check(h, Controller, lim, true); err == nil || fes != FESLimitExceeded {
			t.Fatalf("H2CData over MaxData: fes %d, %v", fes, err)
		}
		_ = hdrLen
	}
	// Wrong hlen, unknown type, a response with data.
	PutHeader(b, Header{Type: TypeCapsuleResp, HLen: 30, PLen: 30})
	h, _ := ParseHeader(b)
	if _, _, _, err := Check(h, Host, Limits{}, true); err == nil {
		t.Fatal("CapsuleResp with hlen 30 accepted")
	}
	PutHeader(b, Header{Type: 0x0f, HLen: 8, PLen: 8})
	h, _ = ParseHeader(b)
	if _, _, _, err := Check(h, Host, Limits{}, true); err == nil {
		t.Fatal("unknown PDU type accepted")
	}
	PutHeader(b, Header{Type: TypeCapsuleResp, HLen: CapsuleRespLen, PDO: 24, PLen: 64})
	h, _ = ParseHeader(b)
	if _, _, _, err := Check(h, Host, Limits{}, true); err == nil {
		t.Fatal("CapsuleResp with data accepted")
	}
	n := PutTerm(b, TypeC2HTermReq, FESOutOfRange, 12, bytes.Repeat([]byte{1}, 200))
	if n != TermLen+MaxTermData {
		t.Fatalf("PutTerm = %d", n)
	}
	tr, err := ParseTerm(b)
	if err != nil || tr.FES != FESOutOfRange || tr.FEI != 12 {
		t.Fatalf("term = %+v, %v", tr, err)
	}
}
