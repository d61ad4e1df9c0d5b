//go:build linux

package uring

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const opTimeout = 11

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

// TestDeferredTaskRun: a ring of one thread (SINGLE_ISSUER|DEFER_TASKRUN)
// holds a completion that arrives later (a timeout's) until the thread
// enters for it: TaskRunPending says so, the CQ stays empty, and
// GetEvents posts it.
func TestDeferredTaskRun(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	r := newRing(t, Options{Entries: 4, SingleThread: true})
	if !r.Deferred() {
		t.Skip("the kernel has no DEFER_TASKRUN (Linux 6.1)")
	}
	ts := unix.NsecToTimespec(int64(time.Millisecond))
	sqe := r.GetSQE()
	sqe.Opcode, sqe.Addr, sqe.Len, sqe.UserData = opTimeout, uint64(uintptr(unsafe.Pointer(&ts))), 1, 9
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	runtime.KeepAlive(&ts)
	deadline := time.Now().Add(10 * time.Second)
	for !r.TaskRunPending() {
		if time.Now().After(deadline) {
			t.Fatal("a 1 ms timeout did not complete in 10 s")
		}
		time.Sleep(100 * time.Microsecond)
	}
	if c := r.Peek(); c != nil {
		t.Fatalf("a deferred completion reached the CQ before an enter: %+v", *c)
	}
	if _, err := r.GetEvents(); err != nil {
		t.Fatal(err)
	}
	c := r.Peek()
	if c == nil || c.UserData != 9 || c.Res != -int32(unix.ETIME) {
		t.Fatalf("after GetEvents: %+v, want the timeout's CQE (ETIME)", c)
	}
	r.Advance()
	if r.TaskRunPending() {
		t.Fatal("task run still pending after GetEvents")
	}
}

// TestFixedFiles reads through a registered file, by index, and fails
// on the slot emptied again.
func TestFixedFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte("0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	r := newRing(t, Options{Entries: 4})
	if err := r.RegisterSparseFiles(8); err != nil {
		t.Fatal(err)
	}
	if err := r.UpdateFile(5, int32(f.Fd())); err != nil {
		t.Fatal(err)
	}
	f.Close() // the table holds its own reference
	buf := make([]byte, 4)
	read := func() CQE {
		sqe := r.GetSQE()
		sqe.Opcode, sqe.Flags, sqe.Fd, sqe.Off, sqe.Len, sqe.UserData = OpRead, SQEFixedFile, 5, 3, 4, 1
		sqe.Addr = uint64(uintptr(unsafe.Pointer(&buf[0])))
		if _, err := r.Submit(); err != nil {
			t.Fatal(err)
		}
		return reap(t, r)
	}
	if c := read(); c.Res != 4 || string(buf) != "3456" {
		t.Fatalf("fixed-file read: %+v %q", c, buf)
	}
	if err := r.UpdateFile(5, -1); err != nil {
		t.Fatal(err)
	}
	if c := read(); c.Res != -int32(unix.EBADF) {
		t.Fatalf("read of an emptied slot: %+v, want EBADF", c)
	}
}

// TestEventfd: a ring with a registered eventfd signals it when a read of
// an empty pipe completes, after the writer writes — on a deferred ring
// (SINGLE_ISSUER|DEFER_TASKRUN) too, where the completion waits for this
// thread to enter the kernel: the kernel signals when it queues the
// completion's task work, so a thread asleep on the eventfd wakes, sees
// TaskRunPending and posts it with GetEvents.
func TestEventfd(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for _, single := range []bool{false, true} {
		r := newRing(t, Options{Entries: 4, SingleThread: single})
		efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(efd)
		if err := r.RegisterEventfd(efd); err != nil {
			t.Fatal(err)
		}
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		defer unix.Close(p[0])
		defer unix.Close(p[1])
		buf := make([]byte, 16)
		sqe := r.GetSQE()
		sqe.Opcode, sqe.Fd, sqe.Off, sqe.UserData = OpRead, int32(p[0]), ^uint64(0), 7
		sqe.Addr, sqe.Len = uint64(uintptr(unsafe.Pointer(&buf[0]))), uint32(len(buf))
		if _, err := r.Submit(); err != nil {
			t.Fatal(err)
		}
		var cnt [8]byte
		unix.Read(efd, cnt[:]) // whatever the submission signalled
		go func() {
			time.Sleep(5 * time.Millisecond)
			unix.Write(p[1], []byte("hello"))
		}()
		fds := []unix.PollFd{{Fd: int32(efd), Events: unix.POLLIN}}
		if n, err := unix.Poll(fds, 10000); n != 1 || err != nil {
			t.Fatalf("deferred %v: eventfd not signalled by the completion: %d, %v", r.Deferred(), n, err)
		}
		if r.Deferred() {
			if !r.TaskRunPending() {
				t.Fatal("eventfd signalled, but no task run pending")
			}
			if _, err := r.GetEvents(); err != nil {
				t.Fatal(err)
			}
		}
		c := r.Peek()
		if c == nil {
			t.Fatalf("deferred %v: eventfd signalled, CQ empty", r.Deferred())
		}
		if c.UserData != 7 || c.Res != 5 || string(buf[:5]) != "hello" {
			t.Fatalf("CQE %+v, buffer %q", *c, buf[:5])
		}
		r.Advance()
		if err := r.UnregisterEventfd(); err != nil {
			t.Fatal(err)
		}
	}
}
