package poller_test

import (
	"fmt"
	"time"

	"github.com/bpfblk/bpfblk/poller"
)

// Start a reactor, register a poller that does a little work, and hand it a
// message from another goroutine.
func Example() {
	g, err := poller.Start(poller.Config{Cores: "0", NoPin: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	r := g.Reactors()[0]

	queued := 3 // owned by the reactor: only its goroutine touches it
	done := make(chan struct{})
	_, err = r.Register("drain", func() poller.Status {
		if queued == 0 {
			return poller.Idle
		}
		queued--
		if queued == 0 {
			close(done)
		}
		return poller.Busy
	}, 0)
	if err != nil {
		fmt.Println(err)
		return
	}
	<-done

	reply := make(chan string, 1)
	if err := r.Send(func() { reply <- fmt.Sprintf("hello from core %d", r.Core()) }); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(<-reply)

	st, _ := r.Stats()
	fmt.Println("busy runs of drain:", st.Pollers[0].BusyRuns)
	if err := g.Stop(); err != nil {
		fmt.Println(err)
	}
	// Output:
	// hello from core 0
	// busy runs of drain: 3
}

// A timed poller runs about once per period.
func ExampleReactor_Register() {
	g, _ := poller.Start(poller.Config{Cores: "0", NoPin: true})
	defer g.Stop()
	ticks := make(chan time.Time, 16)
	p, _ := g.Reactors()[0].Register("tick", func() poller.Status {
		select {
		case ticks <- time.Now():
		default:
		}
		return poller.Idle
	}, 5*time.Millisecond)
	first, second := <-ticks, <-ticks
	p.Unregister()
	fmt.Println(second.Sub(first) > 0)
	// Output: true
}
