package compute_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/compute"
	"github.com/bpfblk/bpfblk/compute/csd"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
	"github.com/bpfblk/bpfblk/poller"
)

// newCSD puts a compute controller (CP + 64 MiB SLM, on its own device core
// with one compute core) of subsystem nqn on bus.
func newCSD(tb testing.TB, bus *mock.Bus, serial, nqn string) *nvme.Controller {
	return newCSDRate(tb, bus, serial, nqn, 0)
}

// newCSDRate is newCSD with a compute core of the emulated rate (bytes per
// second; 0: as fast as the host runs it).
func newCSDRate(tb testing.TB, bus *mock.Bus, serial, nqn string, rate int64) *nvme.Controller {
	tb.Helper()
	mc, err := mock.NewController(bus, mock.Config{Serial: serial, Subsystem: nqn, Mode: mock.DeviceCore,
		Compute: &mock.ComputeConfig{Cores: 1, Rate: rate, Runner: csd.Runner{}}, Namespaces: []mock.NamespaceConfig{
			{Kind: mock.Memory, Size: 4096, CSI: nvme.CSICP},
			{Kind: mock.Memory, Size: 64 << 20, CSI: nvme.CSISLM},
		}})
	if err != nil {
		tb.Fatal(err)
	}
	c, err := nvme.NewController(mc, nvme.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close(); mc.Close() })
	return c
}

// addBase makes a bdev of namespace 1 of c, writes data into it and adds
// it to the fixture; it returns its index.
func (f *fixture) addBase(t *testing.T, c *nvme.Controller, data []byte) int {
	t.Helper()
	ns := c.Namespaces()[0]
	b, err := bdev.NewNVMe(c.Name()+"n1", c, ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	d, err := bdev.Open(b, true)
	if err != nil {
		t.Fatal(err)
	}
	s, err := bdev.NewSync(d, f.g.Reactors()[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteAt(context.Background(), data, 0); err != nil {
		t.Fatal(err)
	}
	s.Close()
	d.Close()
	f.bdevs = append(f.bdevs, b)
	f.data = append(f.data, data)
	return len(f.bdevs) - 1
}

// TestSeveralDevicesShareTargets: two compute devices of the data's
// subsystem both take chunks of every target; the matches equal the
// reference; every scanned byte crossed the bus peer to peer (the data
// controllers' Reads into the devices' memory) and host memory received
// only the match lists.
func TestSeveralDevicesShareTargets(t *testing.T) {
	f := newFixture(t)
	d1 := newCSD(t, f.bus, "CSDA", testNQN)
	d2 := newCSD(t, f.bus, "CSDB", testNQN)
	cb, err := compute.NewBdev("scan0", f.bdevs)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	opts := compute.Options{Placement: compute.PlaceDevice, ChunkBytes: 16 << 10, InFlight: 2, Devices: []*nvme.Controller{d1, d2}}
	// The bus traffic of a scan's setup and teardown (Identify, Load
	// Program, range sets), measured with no targets.
	b0 := f.bus.Stats()
	if _, err := cb.Scan(context.Background(), f.g, memmemExe(t), nil, opts); err != nil {
		t.Fatal(err)
	}
	b1 := f.bus.Stats()
	got, st := f.scanAll(t, cb, opts)
	b2 := f.bus.Stats()
	var total uint64
	for i := range f.bdevs {
		if want := f.reference(i); !slices.Equal(got[i], want) {
			t.Fatalf("%s: %d matches, reference %d", f.bdevs[i].Name(), len(got[i]), len(want))
		}
		if want := d1.Name() + "+" + d2.Name(); st.Targets[i].Engine != want {
			t.Fatalf("target %d ran on %q, want %q", i, st.Targets[i].Engine, want)
		}
		total += uint64(len(f.data[i]))
	}
	if st.BytesScanned != total || len(st.Faults) != 0 || len(st.Engines) != 3 {
		t.Fatalf("stats %+v", st)
	}
	for _, e := range st.Engines[1:] {
		if e.Chunks == 0 || e.Targets != len(f.bdevs) {
			t.Fatalf("engine %s ran %d chunks of %d targets: both devices must share the work", e.Name, e.Chunks, e.Targets)
		}
	}
	if p2p := p2p(b0, b1, b2); p2p != total {
		t.Fatalf("peer-to-peer bytes %d, want the %d bytes scanned", p2p, total)
	}
	if toHost := (b2.HostWrite - b1.HostWrite) - (b1.HostWrite - b0.HostWrite); toHost != st.BytesToHost || toHost > total/20 {
		t.Fatalf("host memory received %d bytes, the scan reports %d to host (match lists) of %d scanned", toHost, st.BytesToHost, total)
	}
	if b2.Faults != b0.Faults || b2.PeerRead != b0.PeerRead {
		t.Fatalf("bus %+v then %+v", b0, b2)
	}
	t.Logf("%d bytes scanned by %s (%d chunks) and %s (%d chunks); bus: %d bytes peer to peer, %d bytes into host memory (match lists %d)",
		total, st.Engines[1].Name, st.Engines[1].Chunks, st.Engines[2].Name, st.Engines[2].Chunks, p2p(b0, b1, b2), (b2.HostWrite-b1.HostWrite)-(b1.HostWrite-b0.HostWrite), st.BytesToHost)
}

// TestDevicesSplitOneTarget: one namespace that two compute devices reach
// is split between them by ranges: both scan chunks of it, together all of
// it once, with the reference's matches. The devices compute at an emulated
// rate, so that neither can finish the target before the other starts.
func TestDevicesSplitOneTarget(t *testing.T) {
	f := newFixture(t)
	d1 := newCSDRate(t, f.bus, "CSDA", testNQN, 16<<20)
	d2 := newCSDRate(t, f.bus, "CSDB", testNQN, 16<<20)
	cb, err := compute.NewBdev("one", f.bdevs[1:2])
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	var got []uint64
	const chunk = 16 << 10
	st, err := cb.Scan(context.Background(), f.g, memmemExe(t), cb.AllTargets(), compute.Options{Placement: compute.PlaceDevice, ChunkBytes: chunk, InFlight: 2,
		Devices: []*nvme.Controller{d1, d2}, OnMatch: func(m compute.Match) { got = append(got, m.LBA) }})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if want := f.reference(1); !slices.Equal(got, want) {
		t.Fatalf("%d matches, reference %d", len(got), len(want))
	}
	size := uint64(len(f.data[1]))
	if len(st.Engines) != 3 || st.BytesScanned != size || len(st.Faults) != 0 {
		t.Fatalf("stats %+v", st)
	}
	a, b := st.Engines[1], st.Engines[2]
	if a.Chunks == 0 || b.Chunks == 0 || a.Chunks+b.Chunks != size/chunk || a.BytesScanned+b.BytesScanned != size {
		t.Fatalf("%s scanned %d chunks (%d bytes), %s %d (%d bytes) of a %d-byte target in %d-byte chunks", a.Name, a.Chunks, a.BytesScanned, b.Name, b.Chunks, b.BytesScanned, size, chunk)
	}
	t.Logf("%s: %d chunks, %s: %d chunks", a.Name, a.Chunks, b.Name, b.Chunks)
}

// p2p is the peer memory bytes of the scan between b1 and b2 less those of
// the setup-only scan between b0 and b1.
func p2p(b0, b1, b2 mock.BusStats) uint64 {
	return (b2.PeerWrite - b1.PeerWrite) - (b1.PeerWrite - b0.PeerWrite)
}

// TestOtherSubsystemFallsBack: a namespace of a controller of another NVM
// subsystem is not reachable: auto scans it on host cores and says why,
// device refuses the scan; the other targets are offloaded.
func TestOtherSubsystemFallsBack(t *testing.T) {
	f := newFixture(t)
	dev := newCSD(t, f.bus, "CSDA", testNQN)
	om, err := mock.NewController(f.bus, mock.Config{Serial: "ELSEWHERE", Namespaces: []mock.NamespaceConfig{{Kind: mock.Memory, Size: 1 << 20, LBASize: 512}}})
	if err != nil {
		t.Fatal(err)
	}
	other, err := nvme.NewController(om, nvme.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close(); om.Close() })
	// The other controller's namespace holds the first namespace's data.
	ob := f.addBase(t, other, f.data[0])
	cb, err := compute.NewBdev("scan0", f.bdevs)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	_, err = cb.Scan(context.Background(), f.g, memmemExe(t), cb.AllTargets(), compute.Options{Placement: compute.PlaceDevice, Devices: []*nvme.Controller{dev}})
	if err == nil || !strings.Contains(err.Error(), "not in") || !strings.Contains(err.Error(), "NVM subsystem") {
		t.Fatalf("device engine over another subsystem's namespace: %v", err)
	}
	got, st := f.scanAll(t, cb, compute.Options{Devices: []*nvme.Controller{dev}})
	for i := range f.bdevs {
		if !slices.Equal(got[i], f.reference(i)) {
			t.Fatalf("%s: %d matches, reference %d", f.bdevs[i].Name(), len(got[i]), len(f.reference(i)))
		}
		want := dev.Name()
		if i == ob {
			want = "host"
			if !strings.Contains(st.Targets[i].Why, "NVM subsystem") {
				t.Fatalf("target %d on the host says %q", i, st.Targets[i].Why)
			}
		}
		if st.Targets[i].Engine != want {
			t.Fatalf("target %d ran on %q, want %q", i, st.Targets[i].Engine, want)
		}
	}
}

// BenchmarkOffloadDevices scans the bench set (48 MiB) offloaded to one and
// to two compute devices (each with one compute core) from two reactors,
// with the compute-bound byte-loop filter. Each iteration runs both, one
// after the other under the same load; one_MiB/s and two_MiB/s are their
// throughputs over Stats.Elapsed (setup such as loading the program
// excluded), x_one their ratio, and one_MiB/cpu_s and two_MiB/cpu_s the
// bytes scanned per CPU-second the whole process used (host reactors,
// device and compute cores, from the first match to the end of the scan).
//
// rate=host: the emulated devices compute as fast as the host's CPUs run
// them, and on a machine with fewer CPUs than reactors plus device and
// compute cores they share them: the figure says what the host can drive,
// not how devices scale. rate=emulated-*: each compute core models a device
// core of that rate (mock.ComputeConfig.Rate; the time is emulated), well
// below what the host runs the filter at, so that device compute is the
// bottleneck: x_one shows whether the scan splits the work over the
// devices (2 is perfect).
func BenchmarkOffloadDevices(b *testing.B) {
	s := newBenchSet(b)
	defer s.close()
	cb, err := compute.NewBdev("bench", s.bdevs)
	if err != nil {
		b.Fatal(err)
	}
	defer cb.Close()
	g, err := poller.Start(poller.Config{Cores: "0-1", NoPin: true})
	if err != nil {
		b.Fatal(err)
	}
	defer g.Stop()
	exe := patternProgram(&testing.T{})
	for _, r := range []struct {
		name string
		rate int64
	}{{"host", 0}, {"emulated-64MiBps", 64 << 20}} {
		b.Run("rate="+r.name, func(b *testing.B) {
			devs := []*nvme.Controller{newCSDRate(b, s.bus, "CSDA"+r.name, testNQN, r.rate), newCSDRate(b, s.bus, "CSDB"+r.name, testNQN, r.rate)}
			// A first scan on each device makes its memory, queues and
			// engine instances: setup, not measured.
			if _, err := cb.Scan(context.Background(), g, exe, cb.AllTargets(), compute.Options{Placement: compute.PlaceDevice, Devices: devs}); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			var elapsed, cpu [2]time.Duration
			var scanned [2]uint64
			b.SetBytes(2 * int64(s.total))
			for range b.N {
				for n := 1; n <= 2; n++ {
					var cpu0 time.Duration
					opts := compute.Options{Placement: compute.PlaceDevice, Devices: devs[:n], OnMatch: func(compute.Match) {
						if cpu0 == 0 {
							cpu0 = cpuTime(b)
						}
					}}
					st, err := cb.Scan(context.Background(), g, exe, cb.AllTargets(), opts)
					if err != nil {
						b.Fatal(err)
					}
					if len(st.Faults) > 0 {
						b.Fatal(st.Faults)
					}
					cpu[n-1] += cpuTime(b) - cpu0
					if len(st.Engines) != n+1 {
						b.Fatalf("%d devices offered, engines %+v", n, st.Engines)
					}
					for _, e := range st.Engines[1:] {
						if e.Chunks == 0 {
							b.Fatalf("%d devices offered, %s scanned nothing: %+v", n, e.Name, st.Engines)
						}
					}
					elapsed[n-1] += st.Elapsed
					scanned[n-1] += st.BytesScanned
				}
			}
			const mib = 1 << 20
			b.ReportMetric(float64(scanned[0])/elapsed[0].Seconds()/mib, "one_MiB/s")
			b.ReportMetric(float64(scanned[1])/elapsed[1].Seconds()/mib, "two_MiB/s")
			b.ReportMetric(elapsed[0].Seconds()/elapsed[1].Seconds(), "x_one")
			b.ReportMetric(float64(scanned[0])/cpu[0].Seconds()/mib, "one_MiB/cpu_s")
			b.ReportMetric(float64(scanned[1])/cpu[1].Seconds()/mib, "two_MiB/cpu_s")
		})
	}
}
