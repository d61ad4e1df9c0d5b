package nvme

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"unsafe"
)

// The queue pair writes SQEs and reads CQEs in place; their Go layout must be
// the wire layout.
func TestWireLayout(t *testing.T) {
	if unsafe.Sizeof(SQE{}) != SQESize || unsafe.Sizeof(CQE{}) != CQESize {
		t.Fatalf("SQE %d bytes, CQE %d bytes", unsafe.Sizeof(SQE{}), unsafe.Sizeof(CQE{}))
	}
	e := SQE{OPC: 1, Flags: 2, CID: 0x0304, NSID: 0x05060708, CDW2: 9, CDW3: 10, MPTR: 11, PRP1: 12, PRP2: 13,
		CDW10: 14, CDW11: 15, CDW12: 16, CDW13: 17, CDW14: 18, CDW15: 19}
	var b [64]byte
	e.MarshalTo(b[:])
	mem := unsafe.Slice((*byte)(unsafe.Pointer(&e)), SQESize)
	if !bytes.Equal(b[:], mem) {
		t.Fatalf("SQE in-memory layout differs from wire order:\n%x\n%x", b, mem)
	}
	back, err := ParseSQE(b[:])
	if err != nil || back != e {
		t.Fatalf("ParseSQE round trip: %+v %v", back, err)
	}
	c := CQE{DW0: 1, DW1: 2, SQHD: 3, SQID: 4, CID: 5, Status: 0x8003}
	var cb [16]byte
	c.MarshalTo(cb[:])
	if !bytes.Equal(cb[:], unsafe.Slice((*byte)(unsafe.Pointer(&c)), CQESize)) {
		t.Fatal("CQE in-memory layout differs from wire order")
	}
	if p, _ := ParseCQE(cb[:]); p != c {
		t.Fatalf("ParseCQE round trip: %+v", p)
	}
}

func TestStatusError(t *testing.T) {
	for _, tc := range []struct {
		field uint16
		name  string
		is    error
		dnr   bool
	}{
		{ErrInvalidField.Field(), "Invalid Field in Command", ErrInvalidField, false},
		{ErrLBAOutOfRange.Field() | 1<<15 | 1, "LBA Out of Range", ErrLBAOutOfRange, true},
		{ErrDataTransfer.Field(), "Data Transfer Error", ErrDataTransfer, false},
		{ErrUnrecoveredRead.Field(), "Unrecovered Read Error", ErrUnrecoveredRead, false},
		{ErrInvalidQueueID.Field(), "Invalid Queue Identifier", ErrInvalidQueueID, false},
		{uint16(0x7)<<9 | 0x42<<1, "Vendor Specific", nil, false},
		{uint16(0x5)<<9 | 0x42<<1, "Reserved Status", nil, false},
	} {
		err := StatusFromField(tc.field)
		if err == nil {
			t.Fatalf("%#x: nil error", tc.field)
		}
		if !strings.Contains(err.Error(), tc.name) {
			t.Errorf("%#x: %q lacks %q", tc.field, err, tc.name)
		}
		if tc.is != nil && !errors.Is(err, tc.is) {
			t.Errorf("%#x: errors.Is(%v, %v) false", tc.field, err, tc.is)
		}
		if errors.Is(err, ErrInternal) {
			t.Errorf("%#x: matches Internal Error", tc.field)
		}
		var se StatusError
		if !errors.As(err, &se) || se.DNR != tc.dnr {
			t.Errorf("%#x: DNR %v want %v", tc.field, se.DNR, tc.dnr)
		}
		if se.Field() != tc.field&^1 {
			t.Errorf("%#x: Field() %#x", tc.field, se.Field())
		}
	}
	if StatusFromField(1) != nil || StatusFromField(0) != nil {
		t.Error("success status is an error")
	}
	if !errors.Is(abortedTimeout{}, ErrTimeout) || !errors.Is(abortedTimeout{}, ErrAborted) || errors.Is(abortedTimeout{}, ErrReset) {
		t.Error("abortedTimeout matching")
	}
}

func TestDoorbellOffset(t *testing.T) {
	if DoorbellOffset(0, false, 0) != 0x1000 || DoorbellOffset(0, true, 0) != 0x1004 ||
		DoorbellOffset(3, true, 0) != 0x101c || DoorbellOffset(1, false, 2) != 0x1000+2*16 {
		t.Fatal("doorbell offsets")
	}
	c := CAP(0x024018200f0107ff) // QEMU with a CMB
	if c.MQES() != 2047 || !c.CQR() || c.TO().Seconds() != 7.5 || c.DSTRD() != 0 || c.CSS() != 0xc1 || !c.CMBS() || c.MPSMAX() != 4 {
		t.Fatalf("CAP decode: %d %v %v %d %#x %v", c.MQES(), c.CQR(), c.TO(), c.DSTRD(), c.CSS(), c.CMBS())
	}
	if i, ok, err := DecodeCMB(0x62, 0x0004021d); !ok || err != nil || i.Size != 64<<20 || i.BIR != 2 {
		t.Fatalf("CMBSZ decode %+v %v %v", i, ok, err)
	}
}

func identifyControllerSample() []byte {
	b := make([]byte, IdentifyDataSize)
	le.PutUint16(b[0:], 0x1b36)
	copy(b[4:24], "VFIOTESTA           ")
	copy(b[24:64], "QEMU NVMe Ctrl                          ")
	copy(b[64:72], "7.2.22  ")
	b[77] = 7
	le.PutUint32(b[80:], 0x10400)
	b[512], b[513] = 0x66, 0x44
	le.PutUint32(b[516:], 256)
	le.PutUint16(b[520:], 0x15d)
	copy(b[768:], "nqn.2019-08.org.qemu:VFIOTESTA")
	return b
}

func TestParseIdentify(t *testing.T) {
	c, err := ParseIdentifyController(identifyControllerSample())
	if err != nil {
		t.Fatal(err)
	}
	if c.Serial != "VFIOTESTA" || c.Model != "QEMU NVMe Ctrl" || c.Firmware != "7.2.22" || c.MDTS != 7 ||
		c.NN != 256 || c.ONCS&ONCSCopy == 0 || c.SubNQN != "nqn.2019-08.org.qemu:VFIOTESTA" {
		t.Fatalf("%+v", c)
	}
	if _, err := ParseIdentifyController(make([]byte, 100)); err == nil {
		t.Error("short identify accepted")
	}
	n := make([]byte, IdentifyDataSize)
	le.PutUint64(n[0:], 131072)
	n[25] = 7
	n[26] = 4
	for i := 0; i < 8; i++ {
		le.PutUint32(n[128+4*i:], uint32(9+i%4)<<16)
	}
	ns, err := ParseIdentifyNamespace(n)
	if err != nil || ns.LBASize != 512 || ns.NSZE != 131072 || len(ns.LBAF) != 8 {
		t.Fatalf("%+v %v", ns, err)
	}
	n[26] = 9 // beyond NLBAF
	if _, err := ParseIdentifyNamespace(n); err == nil {
		t.Error("FLBAS beyond NLBAF accepted")
	}
	l := make([]byte, IdentifyDataSize)
	le.PutUint32(l[0:], 1)
	le.PutUint32(l[4:], 2)
	if ids, err := ParseNSList(l); err != nil || len(ids) != 2 {
		t.Fatalf("%v %v", ids, err)
	}
	le.PutUint32(l[8:], 2)
	if _, err := ParseNSList(l); err == nil {
		t.Error("non-ascending list accepted")
	}
	d := make([]byte, IdentifyDataSize)
	d[0], d[1] = NSDescTypeCSI, 1
	d[4] = CSICP
	if got, err := ParseNSDescriptors(d); err != nil || !got.HasCSI || got.CSI != CSICP {
		t.Fatalf("%+v %v", got, err)
	}
	d[1] = 2
	if _, err := ParseNSDescriptors(d); err == nil {
		t.Error("CSI descriptor of length 2 accepted")
	}
}

// FuzzParseCQE: any 16 bytes parse, and the status renders without panic.
func FuzzParseCQE(f *testing.F) {
	f.Add(make([]byte, 16))
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0x01, 0x81})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCQE(b)
		if len(b) < CQESize {
			if err == nil {
				t.Fatal("short CQE accepted")
			}
			return
		}
		var out [16]byte
		c.MarshalTo(out[:])
		if !bytes.Equal(out[:], b[:16]) {
			t.Fatal("CQE round trip")
		}
		if err := c.Err(); err != nil {
			_ = err.Error()
			var se StatusError
			if !errors.As(err, &se) || se.Field() != c.Status&^1 {
				t.Fatalf("status %#x -> %+v", c.Status, se)
			}
		}
	})
}

// FuzzParseIdentify: the Identify and log page parsers never panic and
// reject what they cannot represent.
func FuzzParseIdentify(f *testing.F) {
	ctrl := identifyControllerSample()
	f.Add(uint16(0), ctrl[:600])
	f.Add(uint16(768), ctrl[768:800])
	f.Add(uint16(0), []byte{1, 0, 0, 0, 2, 0, 0, 0})
	f.Add(uint16(0), []byte{NSDescTypeCSI, 1, 0, 0, CSICP})
	f.Add(uint16(24), []byte{7, 4, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, off uint16, b []byte) {
		// b is placed at off in an otherwise zero 4 KiB page, which keeps
		// inputs small while reaching every field.
		page := make([]byte, IdentifyDataSize)
		copy(page[int(off)%IdentifyDataSize:], b)
		if c, err := ParseIdentifyController(page); err == nil && len(c.Serial) > 20 {
			t.Fatal("serial longer than its field")
		}
		if ns, err := ParseIdentifyNamespace(page); err == nil && ns.NSZE != 0 {
			if ns.LBASize < 512 || ns.LBASize > 65536 {
				t.Fatalf("LBA size %d", ns.LBASize)
			}
		}
		if ids, err := ParseNSList(page); err == nil {
			for i := 1; i < len(ids); i++ {
				if ids[i] <= ids[i-1] {
					t.Fatal("list not ascending")
				}
			}
		}
		ParseNSDescriptors(page)
		parseIOCommandSets(page)
		ParseSMARTLog(page[:SMARTLogSize])
		ParseErrorLog(b)
		ParseIdentifyController(b)
		ParseIdentifyNamespace(b)
	})
}
