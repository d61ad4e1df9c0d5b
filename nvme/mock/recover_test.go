package mock_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
)

// TestFatalWhileIdle: a controller that reports fatal status while nothing
// is outstanding is found by the idle queue pair's periodic check, reset,
// and then answers admin and I/O commands; an admin command issued first on
// a fatal controller resets it too. Repeated, it shows that failures leak no
// admin queue slots (the admin queue has 32 entries).
func TestFatalWhileIdle(t *testing.T) {
	for _, mode := range []mock.Mode{mock.Inline, mock.DeviceCore} {
		t.Run([]string{"inline", "device-core"}[mode], func(t *testing.T) {
			r := newRig(t, mock.Config{Mode: mode}, nvme.Options{IOTimeout: 8 * time.Millisecond, AdminTimeout: time.Second})
			qp, err := r.ctrl.NewQueuePair(8)
			if err != nil {
				t.Fatal(err)
			}
			rc := newRec()
			want := bytes.Repeat([]byte{0x5a}, 512)
			copy(r.buf.Buf, want)
			if err := qp.Write(r.ns, 7, 1, r.buf, 0, rc, 0); err != nil {
				t.Fatal(err)
			}
			drain(t, qp)
			cycles := 100
			if testing.Short() {
				cycles = 40
			}
			for i := 0; i < cycles; i++ {
				resets := r.ctrl.Resets()
				r.dev.SetFatal()
				if i%2 == 0 {
					// Found by the idle queue pair's timeout scan.
					deadline := time.Now().Add(10 * time.Second)
					for r.ctrl.Resets() == resets {
						if time.Now().After(deadline) {
							t.Fatalf("cycle %d: fatal status of an idle controller not noticed (CSTS %#x)", i, r.dev.Read32(nvme.RegCSTS))
						}
						qp.Process(0)
						time.Sleep(100 * time.Microsecond)
					}
				}
				// An admin command: on a fatal controller it resets it first.
				if _, err := r.ctrl.Identify(nvme.CNSController, 0, 0, 0); err != nil {
					t.Fatalf("cycle %d: identify after fatal status: %+v", i, err)
				}
				if got := r.ctrl.Resets(); got != resets+1 || r.ctrl.Failed() {
					t.Fatalf("cycle %d: %d resets (want %d), failed %v", i, got, resets+1, r.ctrl.Failed())
				}
				clear(r.buf.Buf[:512])
				tag := uint64(i + 1)
				if err := qp.Read(r.ns, 7, 1, r.buf, 0, rc, tag); err != nil {
					t.Fatalf("cycle %d: read after reset: %+v", i, err)
				}
				drain(t, qp)
				rc.once(t, tag)
				if rc.err[tag] != nil || !bytes.Equal(r.buf.Buf[:512], want) {
					t.Fatalf("cycle %d: read after reset: %v", i, rc.err[tag])
				}
			}
			if st := qp.Stats(); st.Resets != uint64(cycles) {
				t.Errorf("queue pair recovered from %d resets, want %d", st.Resets, cycles)
			}
		})
	}
}

// TestFatalBeforeQueuePair: a queue pair created on a controller that
// reports fatal status finds it reset, not refused.
func TestFatalBeforeQueuePair(t *testing.T) {
	r := newRig(t, mock.Config{}, nvme.Options{})
	r.dev.SetFatal()
	qp, err := r.ctrl.NewQueuePair(8)
	if err != nil {
		t.Fatalf("queue pair on a controller with fatal status: %+v", err)
	}
	if r.ctrl.Resets() != 1 || r.ctrl.Failed() {
		t.Fatalf("resets %d, failed %v", r.ctrl.Resets(), r.ctrl.Failed())
	}
	rc := newRec()
	if err := qp.Read(r.ns, 0, 1, r.buf, 0, rc, 1); err != nil {
		t.Fatal(err)
	}
	drain(t, qp)
	if rc.err[1] != nil {
		t.Fatalf("read: %v", rc.err[1])
	}
	// Check finds nothing to do on a healthy controller, and resets one
	// with fatal status.
	if err := r.ctrl.Check(); err != nil || r.ctrl.Resets() != 1 {
		t.Fatalf("check of a healthy controller: %v, %d resets", err, r.ctrl.Resets())
	}
	r.dev.SetFatal()
	if err := r.ctrl.Check(); err != nil || r.ctrl.Resets() != 2 || r.dev.Read32(nvme.RegCSTS)&nvme.CSTSFatal != 0 {
		t.Fatalf("check of a fatal controller: %v, %d resets, CSTS %#x", err, r.ctrl.Resets(), r.dev.Read32(nvme.RegCSTS))
	}
}

// TestFatalAdminNoLeak: admin commands that fail because the controller
// reports fatal status while they are outstanding reset it, and do not fill
// the admin queue (32 entries) with commands counted as unanswered.
func TestFatalAdminNoLeak(t *testing.T) {
	r := newRig(t, mock.Config{}, nvme.Options{AdminTimeout: 5 * time.Second})
	for i := 0; i < 100; i++ {
		resets := r.ctrl.Resets()
		h := r.dev.InjectFault(mock.Fault{Admin: true, Opcodes: []uint8{nvme.AdminGetFeatures}, Fatal: true, Count: 1})
		if _, err := r.ctrl.GetFeatures(nvme.FeatNumQueues, 0, 0); !errors.Is(err, nvme.ErrControllerFatal) {
			t.Fatalf("cycle %d: command that failed the controller: %v, want ErrControllerFatal", i, err)
		}
		if h.Hits() != 1 || r.ctrl.Resets() != resets+1 || r.ctrl.Failed() {
			t.Fatalf("cycle %d: fault hits %d, resets %d (want %d), failed %v", i, h.Hits(), r.ctrl.Resets(), resets+1, r.ctrl.Failed())
		}
		r.dev.ClearFaults()
		if _, err := r.ctrl.GetFeatures(nvme.FeatNumQueues, 0, 0); err != nil {
			t.Fatalf("cycle %d: admin command after the failure: %+v", i, err)
		}
	}
}

// TestUnansweredAdminReset: admin commands the controller never answers
// count as outstanding (it may still answer them); once they would fill the
// admin queue, the next command resets the controller instead of failing
// with a full queue, and runs.
func TestUnansweredAdminReset(t *testing.T) {
	r := newRig(t, mock.Config{}, nvme.Options{AdminDepth: 4, AdminTimeout: 20 * time.Millisecond})
	for cycle := 0; cycle < 3; cycle++ {
		resets := r.ctrl.Resets()
		r.dev.InjectFault(mock.Fault{Admin: true, Opcodes: []uint8{nvme.AdminGetFeatures}, Drop: true, Count: 2})
		for i := 0; i < 2; i++ {
			if _, err := r.ctrl.GetFeatures(nvme.FeatNumQueues, 0, 0); !errors.Is(err, nvme.ErrTimeout) {
				t.Fatalf("cycle %d: dropped command %d: %v, want ErrTimeout", cycle, i, err)
			}
		}
		if r.ctrl.Resets() != resets {
			t.Fatalf("cycle %d: reset before the admin queue filled", cycle)
		}
		if _, err := r.ctrl.GetFeatures(nvme.FeatNumQueues, 0, 0); err != nil {
			t.Fatalf("cycle %d: command after %d unanswered ones: %+v", cycle, 2, err)
		}
		if r.ctrl.Resets() != resets+1 || r.ctrl.Failed() {
			t.Fatalf("cycle %d: resets %d (want %d), failed %v", cycle, r.ctrl.Resets(), resets+1, r.ctrl.Failed())
		}
	}
}
