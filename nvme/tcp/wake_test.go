package tcp

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/poller"
)

// wakeCounter counts completions for a goroutine that is not the
// reactor's.
type wakeCounter struct {
	n   atomic.Int64
	err atomic.Pointer[error]
}

func (c *wakeCounter) Complete(_, _ uint64, err error) {
	if err != nil {
		c.err.CompareAndSwap(nil, &err)
	}
	c.n.Add(1)
}

// TestReactorWakesOnResponse: a host I/O queue made on a reactor puts its
// socket in the reactor's wait set, so the reactor, parked for an hour
// with a read in flight, wakes when the response arrives; closing the
// queue takes the socket out again.
func TestReactorWakesOnResponse(t *testing.T) {
	tg, addr := startTarget(t, 1)
	tr, err := Dial(addr, tg.NQN(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := nvme.NewController(tr, nvme.Options{})
	if err != nil {
		tr.Close()
		t.Fatal(err)
	}
	defer c.Close()
	g, err := poller.Start(poller.Config{NoPin: true, Idle: poller.IdleStrategy{Spin: 1, Park: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	r := g.Reactors()[0]
	var qp *nvme.QueuePair
	var p *poller.Poller
	if err := r.Call(func() error {
		var err error
		if qp, err = c.NewQueuePair(4); err != nil {
			return err
		}
		p, err = r.Register("nvme/tcp", func() poller.Status {
			if qp.Process(0) > 0 {
				return poller.Busy
			}
			return poller.Idle
		}, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	hq := tr.queues[qp.ID()].Load()
	if hq == nil || hq.c.unwait == nil {
		t.Fatal("the queue made on a reactor did not join its wait set")
	}
	buf, err := tr.AllocDMA(4096)
	if err != nil {
		t.Fatal(err)
	}
	ns := c.Namespaces()[0]
	var done wakeCounter
	const reads = 20
	for i := range int64(reads) {
		if err := r.Send(func() {
			if err := qp.Read(ns, uint64(i), 1, buf, 0, &done, 0); err != nil {
				done.Complete(0, 0, err)
			}
		}); err != nil {
			t.Fatal(err)
		}
		// Generous for a loaded machine under -race; the park is an hour.
		deadline := time.Now().Add(10 * time.Second)
		for done.n.Load() <= i {
			if time.Now().After(deadline) {
				t.Fatalf("read %d not completed in 10 s: the reactor parked with it in flight and was not woken", i)
			}
			time.Sleep(50 * time.Microsecond)
		}
		if e := done.err.Load(); e != nil {
			t.Fatal(*e)
		}
	}
	s, err := r.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s.WaitParks == 0 {
		t.Fatal("the reactor never parked in its wait set")
	}
	if err := r.Call(func() error {
		p.Unregister()
		return qp.Close()
	}); err != nil {
		t.Fatal(err)
	}
	// The socket left the wait set: with nothing in it, the reactor
	// parks on its timer again, woken by this message.
	s0, err := r.Stats()
	if err != nil {
		t.Fatal(err)
	}
	s1, err := r.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s1.WaitParks != s0.WaitParks {
		t.Fatalf("parked in the wait set after the queue closed: %d -> %d", s0.WaitParks, s1.WaitParks)
	}
}
