package tcp

import (
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/nvme"
)

// TestOnReady polls a worker the way a parking reactor does: a few idle
// polls, then it waits for the wake-up OnReady promises (or 2 s). A host
// connects, initializes the controller and reads: every request must wake
// the loop — none may wait out the 2 s.
func TestOnReady(t *testing.T) {
	tg, err := NewTarget(TargetConfig{Namespaces: []Namespace{newMemNS(512, 64)}})
	if err != nil {
		t.Fatal(err)
	}
	w := tg.Workers()[0]
	woke := make(chan struct{}, 1)
	if err := w.OnReady(func() {
		select {
		case woke <- struct{}{}:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go tg.Serve(ln)
	var timeouts, wakes atomic.Int32
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		idle := 0
		for {
			if w.Poll() > 0 || w.Active() {
				idle = 0
				continue
			}
			if idle++; idle <= armAfter {
				continue
			}
			select {
			case <-stop:
				w.Close()
				return
			case <-woke:
				wakes.Add(1)
			case <-time.After(2 * time.Second):
				timeouts.Add(1)
			}
			idle = 0
		}
	}()
	defer func() {
		close(stop)
		<-stopped
		tg.Close()
	}()
	tr, err := Dial(ln.Addr().String(), tg.NQN(), Options{KeepAlive: -1, Timeout: 30 * time.Second})
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
	for i := 0; i < 20; i++ {
		if err := readOnce(t, qp, c.Namespaces()[0], buf, 0); err != nil {
			t.Fatal(err)
		}
	}
	if n := timeouts.Load(); n > 0 {
		t.Errorf("the worker's loop waited out its 2 s %d times (%d wake-ups)", n, wakes.Load())
	}
	if wakes.Load() == 0 {
		t.Error("no wake-up")
	}
}
