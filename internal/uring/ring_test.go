//go:build linux

package uring

import (
	"os"
	"path/filepath"
	"testing"
	"unsafe"
)

func newRing(t *testing.T, o Options) *Ring {
	t.Helper()
	r, err := New(o)
	if err != nil {
		t.Skipf("io_uring is not available here: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// reap waits for one completion.
func reap(t *testing.T, r *Ring) CQE {
	t.Helper()
	for i := 0; i < 1000; i++ {
		if c := r.Peek(); c != nil {
			cqe := *c
			r.Advance()
			return cqe
		}
		if _, err := r.SubmitAndWait(); err != nil {
			t.Fatal(err)
		}
	}
	t.Fatal("no completion")
	return CQE{}
}

func TestNopRoundTrip(t *testing.T) {
	for _, sqpoll := range []bool{false, true} {
		r := newRing(t, Options{Entries: 4, SQPoll: sqpoll})
		for i := uint64(0); i < 10; i++ {
			sqe := r.GetSQE()
			if sqe == nil {
				t.Fatal("SQ full")
			}
			sqe.Opcode, sqe.UserData = OpNop, 100+i
			if _, err := r.Submit(); err != nil {
				t.Fatal(err)
			}
			c := reap(t, r)
			if c.UserData != 100+i || c.Res != 0 {
				t.Fatalf("sqpoll=%v: cqe %+v, want user data %d res 0", sqpoll, c, 100+i)
			}
		}
	}
}

func TestSQFull(t *testing.T) {
	r := newRing(t, Options{Entries: 4})
	for i := uint32(0); i < r.Entries(); i++ {
		if r.GetSQE() == nil {
			t.Fatalf("SQE %d: SQ full early", i)
		}
	}
	if r.GetSQE() != nil {
		t.Fatal("GetSQE past the SQ size")
	}
	if n, err := r.Submit(); err != nil || n != int(r.Entries()) {
		t.Fatalf("Submit = %d, %v", n, err)
	}
	if r.GetSQE() == nil {
		t.Fatal("SQ still full after submit")
	}
}

func TestReadFixed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	data := make([]byte, 8192)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := newRing(t, Options{Entries: 8})
	if err := r.RegisterSparseBuffers(4); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if err := r.UpdateBuffer(2, buf); err != nil {
		t.Fatal(err)
	}
	sqe := r.GetSQE()
	sqe.Opcode, sqe.Fd, sqe.Off, sqe.Len, sqe.BufIndex, sqe.UserData = OpReadFixed, int32(f.Fd()), 4096, 4096, 2, 7
	sqe.Addr = uint64(uintptr(unsafe.Pointer(&buf[0])))
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	c := reap(t, r)
	if c.Res != 4096 || c.UserData != 7 {
		t.Fatalf("cqe %+v", c)
	}
	if string(buf) != string(data[4096:]) {
		t.Fatal("read the wrong data")
	}
	// A fixed read outside the registered buffer fails with EFAULT.
	sqe = r.GetSQE()
	sqe.Opcode, sqe.Fd, sqe.Len, sqe.BufIndex, sqe.UserData = OpReadFixed, int32(f.Fd()), 4096, 2, 8
	sqe.Addr = uint64(uintptr(unsafe.Pointer(&buf[0]))) + 512
	r.Submit()
	if c := reap(t, r); c.Res >= 0 {
		t.Fatalf("read past the registered buffer: %+v", c)
	}
}
