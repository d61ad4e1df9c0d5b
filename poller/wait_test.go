package poller

import (
	"encoding/binary"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func newEventfd(t *testing.T) int {
	t.Helper()
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func writeEventfd(t *testing.T, fd int) {
	t.Helper()
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], 1)
	if _, err := unix.Write(fd, b[:]); err != nil {
		t.Fatal(err)
	}
}

// waitParked waits until r has parked in its wait set at least n times.
func waitParked(t *testing.T, r *Reactor, n uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		// Stats is a message: it wakes the reactor, which parks again.
		s, err := r.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if s.WaitParks >= n && r.parked.Load() == parkedWait {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("reactor did not park in its wait set: %+v", s)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestWaitFDWakesParkedReactor: a reactor parked for an hour with an
// eventfd in its wait set runs its pollers when another goroutine writes
// the eventfd, every time. (Without the wait set the poller would see the
// write only at the park limit.)
func TestWaitFDWakesParkedReactor(t *testing.T) {
	g := startGroup(t, Config{NoPin: true, Idle: IdleStrategy{Spin: 1, Park: time.Hour}})
	r := g.Reactors()[0]
	fd := newEventfd(t)
	remove, err := r.AddWaitFD(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer remove()
	var got atomic.Uint64
	if _, err := r.Register("eventfd", func() Status {
		var b [8]byte
		if n, _ := unix.Read(fd, b[:]); n == 8 {
			got.Add(binary.NativeEndian.Uint64(b[:]))
			return Busy
		}
		return Idle
	}, 0); err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 20; i++ {
		waitParked(t, r, i)
		writeEventfd(t, fd)
		// Generous for a loaded machine under -race; the park limit is
		// an hour.
		deadline := time.Now().Add(5 * time.Second)
		for got.Load() != i {
			if time.Now().After(deadline) {
				t.Fatalf("write %d not seen: the reactor parked in epoll was not woken", i)
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
}

// TestWakeInWaitSet is TestWake on a reactor that parks in its wait set:
// Wake and messages write its eventfd.
func TestWakeInWaitSet(t *testing.T) {
	g := startGroup(t, Config{NoPin: true, Idle: IdleStrategy{Spin: 1, Park: time.Hour}})
	r := g.Reactors()[0]
	remove, err := r.AddWaitFD(newEventfd(t)) // never written
	if err != nil {
		t.Fatal(err)
	}
	defer remove()
	var flag, seen atomic.Int64
	if _, err := r.Register("watch", func() Status {
		if v := flag.Load(); v != seen.Load() {
			seen.Store(v)
			return Busy
		}
		return Idle
	}, 0); err != nil {
		t.Fatal(err)
	}
	for i := int64(1); i <= 200; i++ {
		if i%2 == 0 {
			time.Sleep(200 * time.Microsecond) // let it park
		}
		if i%50 == 0 {
			waitParked(t, r, 1)
		}
		flag.Store(i)
		r.Wake()
		deadline := time.Now().Add(10 * time.Second)
		for seen.Load() != i {
			if time.Now().After(deadline) {
				t.Fatalf("store %d not seen: the parked reactor was not woken", i)
			}
			time.Sleep(20 * time.Microsecond)
		}
	}
	// A message wakes it too (sendWait fails after 10 s, the park is an
	// hour).
	waitParked(t, r, 1)
	sendWait(t, r, func() {})
}

// TestWaitFDRemoved: once its last descriptor is removed, a reactor parks
// on its timer again.
func TestWaitFDRemoved(t *testing.T) {
	g := startGroup(t, Config{NoPin: true, Idle: IdleStrategy{Spin: 1, Park: 100 * time.Microsecond}})
	r := g.Reactors()[0]
	remove, err := r.AddWaitFD(newEventfd(t))
	if err != nil {
		t.Fatal(err)
	}
	waitParked(t, r, 1)
	remove()
	remove() // twice is harmless
	s0, err := r.Stats()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	s1, err := r.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s1.Parks == s0.Parks {
		t.Fatalf("no parks in 20 ms: %+v", s1)
	}
	if s1.WaitParks != s0.WaitParks {
		t.Fatalf("parked in a wait set without descriptors: %d -> %d", s0.WaitParks, s1.WaitParks)
	}
}

// TestWaitFDRaces adds and removes descriptors from several goroutines
// while the reactor parks, wakes and stops, for the race detector; a
// removal after the reactor ended does nothing and AddWaitFD fails.
func TestWaitFDRaces(t *testing.T) {
	g, err := Start(Config{NoPin: true, Idle: IdleStrategy{Spin: 1, Park: 50 * time.Microsecond}})
	if err != nil {
		t.Fatal(err)
	}
	r := g.Reactors()[0]
	fds := make([]int, 4)
	for i := range fds {
		fds[i] = newEventfd(t)
	}
	var wg sync.WaitGroup
	var late []func()
	var lateMu sync.Mutex
	stop := make(chan struct{})
	for _, fd := range fds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b [8]byte
			binary.NativeEndian.PutUint64(b[:], 1)
			for n := 0; ; n++ {
				remove, err := r.AddWaitFD(fd)
				if errors.Is(err, ErrStopped) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				unix.Write(fd, b[:])
				r.Wake()
				select {
				case <-stop:
					lateMu.Lock()
					late = append(late, remove)
					lateMu.Unlock()
					return
				default:
				}
				if n%3 == 0 {
					time.Sleep(100 * time.Microsecond)
				}
				remove()
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	if err := g.Stop(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for _, remove := range late {
		remove()
	}
	if _, err := r.AddWaitFD(fds[0]); !errors.Is(err, ErrStopped) {
		t.Fatalf("AddWaitFD after Stop: %v, want ErrStopped", err)
	}
}

// TestStopParkedInWaitSet: Stop wakes a reactor parked in its wait set.
func TestStopParkedInWaitSet(t *testing.T) {
	g, err := Start(Config{NoPin: true, Idle: IdleStrategy{Spin: 1, Park: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	r := g.Reactors()[0]
	if _, err := r.AddWaitFD(newEventfd(t)); err != nil {
		t.Fatal(err)
	}
	waitParked(t, r, 1)
	done := make(chan error, 1)
	go func() { done <- g.Stop() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not wake the reactor parked in epoll")
	}
}

// TestCurrent: Current names the reactor on its own goroutine, and none
// elsewhere or after it ended.
func TestCurrent(t *testing.T) {
	listed := func() int {
		n := 0
		byThread.Range(func(_, _ any) bool { n++; return true })
		return n
	}
	before := listed()
	g, err := Start(Config{NoPin: true, Cores: "0-1"})
	if err != nil {
		t.Fatal(err)
	}
	if Current() != nil {
		t.Error("Current on the test's goroutine is not nil")
	}
	for _, r := range g.Reactors() {
		var got *Reactor
		sendWait(t, r, func() { got = Current() })
		if got != r {
			t.Errorf("Current on core %d's reactor: %p, want %p", r.Core(), got, r)
		}
	}
	if err := g.Stop(); err != nil {
		t.Fatal(err)
	}
	if n := listed(); n != before {
		t.Errorf("%d reactors listed after Stop, %d before Start", n, before)
	}
}

// BenchmarkParkedWake measures waking a parked reactor: by Wake on its
// timer-and-channel park, by Wake and by a descriptor becoming ready on its
// epoll park. The reactor parks after one idle iteration and never times
// out; each op lets it fall asleep (50 µs after it announced its park),
// then stores, wakes it and waits for its poller's answer on a channel.
// wake-ns/op is that last part alone: the latency of a wake-up and of the
// answer, the same for all three.
func BenchmarkParkedWake(b *testing.B) {
	for _, mode := range []string{"chan-wake", "epoll-wake", "epoll-fd"} {
		b.Run(mode, func(b *testing.B) {
			g, err := Start(Config{NoPin: true, Idle: IdleStrategy{Spin: 1, Park: time.Hour}})
			if err != nil {
				b.Fatal(err)
			}
			defer g.Stop()
			r := g.Reactors()[0]
			fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
			if err != nil {
				b.Fatal(err)
			}
			defer unix.Close(fd)
			if mode != "chan-wake" {
				remove, err := r.AddWaitFD(fd)
				if err != nil {
					b.Fatal(err)
				}
				defer remove()
			}
			var req, ack atomic.Int64
			acked := make(chan struct{}, 1)
			var rb [8]byte
			if _, err := r.Register("ack", func() Status {
				if mode == "epoll-fd" {
					unix.Read(fd, rb[:])
				}
				if v := req.Load(); v != ack.Load() {
					ack.Store(v)
					acked <- struct{}{}
					return Busy
				}
				return Idle
			}, 0); err != nil {
				b.Fatal(err)
			}
			var one [8]byte
			binary.NativeEndian.PutUint64(one[:], 1)
			b.ReportAllocs()
			b.ResetTimer()
			var woken time.Duration
			for i := int64(1); i <= int64(b.N); i++ {
				for r.parked.Load() == running {
					runtime.Gosched()
				}
				for t0 := time.Now(); time.Since(t0) < 50*time.Microsecond; {
				}
				start := time.Now()
				req.Store(i)
				if mode == "epoll-fd" {
					unix.Write(fd, one[:])
				} else {
					r.Wake()
				}
				<-acked
				woken += time.Since(start)
			}
			b.ReportMetric(float64(woken.Nanoseconds())/float64(b.N), "wake-ns/op")
		})
	}
}
