package poller

import (
	"errors"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseCoreMask(t *testing.T) {
	good := map[string][]int{
		"0x3":                 {0, 1},
		"0X5":                 {0, 2},
		"0-1":                 {0, 1},
		"0,2":                 {0, 2},
		"[0,2-3]":             {0, 2, 3},
		" 3 ":                 {3},
		"0-3,8,10-11":         {0, 1, 2, 3, 8, 10, 11},
		"0x10000000000000000": {64},
	}
	for in, want := range good {
		got, err := ParseCoreMask(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("ParseCoreMask(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0x", "0x0", "0xg", "1-0", "a", "0,,1", "-1", "[0", "0,0", "0-1,1", "5000", "0x-1", "1-"} {
		if got, err := ParseCoreMask(in); err == nil {
			t.Errorf("ParseCoreMask(%q) = %v, want an error", in, got)
		}
	}
}

func TestFormatCores(t *testing.T) {
	if s := FormatCores([]int{0, 1, 2, 5, 7, 8}); s != "0-2,5,7-8" {
		t.Fatalf("FormatCores = %q", s)
	}
	cores, _ := ParseCoreMask(FormatCores([]int{0, 1, 2, 5}))
	if !reflect.DeepEqual(cores, []int{0, 1, 2, 5}) {
		t.Fatalf("round trip = %v", cores)
	}
}

func TestTopology(t *testing.T) {
	top, err := ReadTopology()
	if err != nil {
		t.Fatal(err)
	}
	if top.LogicalCores < 1 || len(top.Available) < 1 || top.CacheLine < 16 {
		t.Fatalf("implausible topology %+v", top)
	}
}

func TestStartRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Cores: "0-"},
		{Cores: "1023"}, // pinned, and no machine here has core 1023
		{Cores: "0", MsgRing: 3},
		{Cores: "0", Idle: IdleStrategy{Spin: -1}},
	} {
		if g, err := Start(cfg); err == nil {
			g.Stop()
			t.Errorf("Start(%+v) succeeded", cfg)
		}
	}
}

// startGroup starts reactors for a test and stops them at its end, checking
// that no goroutine outlives the group.
func startGroup(t *testing.T, cfg Config) *Group {
	t.Helper()
	before := runtime.NumGoroutine()
	g, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := g.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
		checkNoLeak(t, before)
	})
	return g
}

func checkNoLeak(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines leaked: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(time.Millisecond)
	}
}

// sendWait runs fn on r and waits for it.
func sendWait(t *testing.T, r *Reactor, fn func()) {
	t.Helper()
	done := make(chan struct{})
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := r.Send(func() { fn(); close(done) })
		if err == nil {
			break
		}
		if !errors.Is(err, ErrRingFull) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Microsecond)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("reactor did not run the message")
	}
}

func TestPinnedReactor(t *testing.T) {
	avail, err := AvailableCores()
	if err != nil {
		t.Fatal(err)
	}
	core := avail[len(avail)-1]
	g := startGroup(t, Config{Cores: FormatCores([]int{core})})
	r := g.Reactors()[0]
	if r.Core() != core {
		t.Fatalf("Core() = %d, want %d", r.Core(), core)
	}
	sendWait(t, r, func() {
		var set unix.CPUSet
		if err := unix.SchedGetaffinity(0, &set); err != nil {
			t.Error(err)
			return
		}
		if set.Count() != 1 || !set.IsSet(core) {
			t.Errorf("reactor thread affinity has %d cores, want only core %d", set.Count(), core)
		}
		if !r.OnReactor() {
			t.Error("OnReactor false on the reactor")
		}
	})
	if r.OnReactor() {
		t.Fatal("OnReactor true off the reactor")
	}
}

// TestPerSenderOrder sends from several goroutines through a small ring,
// retrying on back-pressure: each sender's messages run in order, exactly once.
func TestPerSenderOrder(t *testing.T) {
	const senders, per = 4, 5000
	g := startGroup(t, Config{Cores: "0", NoPin: true, MsgRing: 32})
	r := g.Reactors()[0]
	var next [senders]int // touched only on the reactor
	var bad atomic.Int64
	var delivered atomic.Int64
	var full atomic.Int64
	var wg sync.WaitGroup
	for s := 0; s < senders; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; {
				seq := i
				err := r.Send(func() {
					if next[s] != seq {
						bad.Add(1)
					}
					next[s] = seq + 1
					delivered.Add(1)
				})
				switch {
				case err == nil:
					i++
				case errors.Is(err, ErrRingFull):
					full.Add(1)
					runtime.Gosched()
				default:
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	sendWait(t, r, func() {})
	if bad.Load() != 0 {
		t.Fatalf("%d messages ran out of order", bad.Load())
	}
	if d := delivered.Load(); d != senders*per {
		t.Fatalf("delivered %d messages, want %d", d, senders*per)
	}
	t.Logf("%d sends met a full ring", full.Load())
}

// blockReactor parks r inside a message until the returned func is called.
func blockReactor(t *testing.T, r *Reactor) (release func()) {
	t.Helper()
	entered, gate := make(chan struct{}), make(chan struct{})
	if err := r.Send(func() { close(entered); <-gate }); err != nil {
		t.Fatal(err)
	}
	<-entered
	var once sync.Once
	return func() { once.Do(func() { close(gate) }) }
}

func TestBackPressure(t *testing.T) {
	const ring = 16
	g := startGroup(t, Config{Cores: "0", NoPin: true, MsgRing: ring})
	r := g.Reactors()[0]
	release := blockReactor(t, r)
	defer release()
	ran := 0 // touched only on the reactor
	for i := 0; i < ring; i++ {
		if err := r.Send(func() { ran++ }); err != nil {
			t.Fatalf("send %d into a ring with room: %v", i, err)
		}
	}
	start := time.Now()
	if err := r.Send(func() { ran++ }); !errors.Is(err, ErrRingFull) {
		t.Fatalf("send into a full ring = %v, want ErrRingFull", err)
	}
	if time.Since(start) > time.Second {
		t.Fatal("send into a full ring blocked")
	}
	release()
	sendWait(t, r, func() {
		if ran != ring {
			t.Errorf("%d queued messages ran, want %d", ran, ring)
		}
	})
}

func TestPeriodicPoller(t *testing.T) {
	g := startGroup(t, Config{Cores: "0", NoPin: true})
	r := g.Reactors()[0]
	const period = 20 * time.Millisecond
	var mu sync.Mutex
	var fires []time.Time
	start := time.Now()
	p, err := r.Register("tick", func() Status {
		mu.Lock()
		fires = append(fires, time.Now())
		mu.Unlock()
		return Idle
	}, period)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * period)
	p.Unregister()
	elapsed := time.Since(start)
	mu.Lock()
	defer mu.Unlock()
	n := len(fires)
	maxFires := int(elapsed/period) + 1
	if n > maxFires || n < maxFires/3 {
		t.Fatalf("a %v poller fired %d times in %v, want about %d", period, n, elapsed, maxFires)
	}
	for i, f := range fires {
		// Never early: the schedule is fixed-rate from registration, so the
		// i-th firing comes no sooner than i+1 periods after it.
		if at, due := f.Sub(start), time.Duration(i+1)*period; at < due {
			t.Fatalf("firing %d came %v after registration, before its due time %v", i, at, due)
		}
	}
}

func TestBusyIdleAccounting(t *testing.T) {
	g := startGroup(t, Config{Cores: "0", NoPin: true})
	r := g.Reactors()[0]
	const busyRuns = 1000
	runs := 0
	done := make(chan struct{})
	_, err := r.Register("work", func() Status {
		runs++
		if runs <= busyRuns {
			return Busy
		}
		if runs == busyRuns+100 {
			close(done)
		}
		return Idle
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	<-done
	st, err := r.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Pollers) != 1 || st.Pollers[0].Name != "work" {
		t.Fatalf("pollers %+v", st.Pollers)
	}
	ps := st.Pollers[0]
	if ps.BusyRuns != busyRuns || ps.IdleRuns < 100 {
		t.Fatalf("poller stats %+v, want %d busy runs and at least 100 idle", ps, busyRuns)
	}
	// Each busy run made its iteration busy; each idle one, with no messages
	// around, an idle iteration.
	if st.BusyIterations < busyRuns || st.IdleIterations < 90 {
		t.Fatalf("reactor stats %+v", st)
	}
	if st.Messages < 1 {
		t.Fatalf("the registration message was not counted: %+v", st)
	}
}

func TestUnregisterFromInside(t *testing.T) {
	g := startGroup(t, Config{Cores: "0", NoPin: true})
	r := g.Reactors()[0]
	runs := 0
	var p *Poller
	registered := make(chan struct{})
	sendWait(t, r, func() {
		var err error
		p, err = r.Register("five", func() Status {
			runs++
			if runs == 5 {
				p.Unregister()
			}
			return Busy
		}, 0)
		if err != nil {
			t.Error(err)
		}
		close(registered)
	})
	<-registered
	time.Sleep(20 * time.Millisecond)
	sendWait(t, r, func() {
		if runs != 5 {
			t.Errorf("self-unregistered poller ran %d times, want 5", runs)
		}
		st, _ := r.Stats()
		if len(st.Pollers) != 0 {
			t.Errorf("unregistered poller still listed: %+v", st.Pollers)
		}
	})
}

func TestUnregisterFromOutside(t *testing.T) {
	g := startGroup(t, Config{Cores: "0", NoPin: true})
	r := g.Reactors()[0]
	var runs atomic.Int64
	p, err := r.Register("spin", func() Status { runs.Add(1); return Idle }, 0)
	if err != nil {
		t.Fatal(err)
	}
	for runs.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	p.Unregister()
	sendWait(t, r, func() {}) // any run in progress has finished
	n := runs.Load()
	time.Sleep(20 * time.Millisecond)
	if runs.Load() != n {
		t.Fatal("poller ran after Unregister")
	}
}

// TestStopWithPending stops a group while messages are queued behind a
// blocked one: every accepted message runs, later sends are refused, and no
// goroutine is left behind.
func TestStopWithPending(t *testing.T) {
	before := runtime.NumGoroutine()
	g, err := Start(Config{Cores: "0-1", NoPin: true, MsgRing: 64})
	if err != nil {
		t.Fatal(err)
	}
	r := g.Reactors()[0]
	release := blockReactor(t, r)
	var ran atomic.Int64
	accepted := 0
	for i := 0; i < 100; i++ {
		if r.Send(func() { ran.Add(1) }) == nil {
			accepted++
		}
	}
	if accepted != 64 {
		t.Fatalf("accepted %d messages into a 64-slot ring", accepted)
	}
	if _, err := r.Register("late", func() Status { return Idle }, 0); !errors.Is(err, ErrRingFull) {
		t.Fatalf("Register on a full ring = %v", err)
	}
	stopped := make(chan error)
	go func() { stopped <- g.Stop() }()
	// Stop has closed the rings once sends start failing with ErrStopped.
	for r.Send(func() {}) != ErrStopped {
		time.Sleep(time.Millisecond)
	}
	if err := g.Reactors()[1].Send(func() {}); err != ErrStopped {
		t.Fatalf("send to a stopping reactor = %v", err)
	}
	release()
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if int(ran.Load()) != accepted {
		t.Fatalf("%d of %d accepted messages ran", ran.Load(), accepted)
	}
	if st, err := r.Stats(); err != nil || st.Messages != uint64(accepted)+1 {
		t.Fatalf("final stats %+v, %v", st, err)
	}
	if err := g.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	checkNoLeak(t, before)
}

func TestStopFromReactor(t *testing.T) {
	g := startGroup(t, Config{Cores: "0", NoPin: true})
	sendWait(t, g.Reactors()[0], func() {
		if err := g.Stop(); err != ErrOnReactor {
			t.Errorf("Stop on a reactor = %v, want ErrOnReactor", err)
		}
	})
}

func TestPingPongAcrossReactors(t *testing.T) {
	g := startGroup(t, Config{Cores: "0-1", NoPin: true})
	pp := newPingPong(g.Reactors()[0], g.Reactors()[1], 20_000)
	if err := pp.start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-pp.done:
	case <-time.After(30 * time.Second):
		t.Fatal("ping-pong stalled")
	}
	if pp.err != nil {
		t.Fatal(pp.err)
	}
	if pp.count != 20_000 {
		t.Fatalf("%d round trips, want 20000", pp.count)
	}
}

// pingPong bounces a message between two reactors n times without
// allocating: SendMsg with a top-level function and a pointer argument.
type pingPong struct {
	a, b  *Reactor
	n     int
	count int // advanced on a only
	err   error
	done  chan struct{}
}

func newPingPong(a, b *Reactor, n int) *pingPong {
	return &pingPong{a: a, b: b, n: n, done: make(chan struct{})}
}

func (p *pingPong) start() error { return p.a.SendMsg(ping, p) }

func ping(arg any) {
	p := arg.(*pingPong)
	if p.count == p.n {
		close(p.done)
		return
	}
	p.count++
	if err := p.b.SendMsg(pong, p); err != nil {
		p.err = err
		close(p.done)
	}
}

func pong(arg any) {
	p := arg.(*pingPong)
	if err := p.a.SendMsg(ping, p); err != nil {
		p.err = err
		close(p.done)
	}
}

func TestCall(t *testing.T) {
	g, err := Start(Config{Cores: "0", NoPin: true, MsgRing: 2})
	if err != nil {
		t.Fatal(err)
	}
	r := g.Reactors()[0]
	want := errors.New("from the reactor")
	if err := r.Call(func() error {
		if !r.OnReactor() {
			t.Error("Call ran fn off the reactor")
		}
		// Nested: runs inline instead of waiting for itself.
		return r.Call(func() error { return want })
	}); err != want {
		t.Fatalf("Call = %v, want %v", err, want)
	}
	// A full ring is waited out, not refused.
	release := blockReactor(t, r)
	for r.Send(func() {}) == nil {
	}
	go func() { time.Sleep(20 * time.Millisecond); release() }()
	ran := false
	if err := r.Call(func() error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("Call on a full ring = %v, ran %v", err, ran)
	}
	g.Stop()
	if err := r.Call(func() error { t.Error("ran on a stopped reactor"); return nil }); !errors.Is(err, ErrStopped) {
		t.Fatalf("Call on a stopped reactor = %v", err)
	}
}

func FuzzParseCoreMask(f *testing.F) {
	for _, s := range []string{"0x3", "0-1", "0,2", "[0,2-3]", "0x", "1-0", "0,,1", "5000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cores, err := ParseCoreMask(s)
		if err != nil {
			return
		}
		if len(cores) == 0 {
			t.Fatalf("%q parsed to no cores without an error", s)
		}
		for i, c := range cores {
			if c < 0 || c >= MaxCores || (i > 0 && c <= cores[i-1]) {
				t.Fatalf("%q parsed to %v", s, cores)
			}
		}
		// The list form round-trips.
		again, err := ParseCoreMask(FormatCores(cores))
		if err != nil || !reflect.DeepEqual(again, cores) {
			t.Fatalf("%q: %v formats as %q, which parses to %v, %v", s, cores, FormatCores(cores), again, err)
		}
	})
}

// TestWake: a reactor parked for an hour runs its pollers at once when a
// goroutine stores to what a poller watches and calls Wake, every time.
func TestWake(t *testing.T) {
	g, err := Start(Config{NoPin: true, Idle: IdleStrategy{Spin: 1, Park: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	r := g.Reactors()[0]
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
}
