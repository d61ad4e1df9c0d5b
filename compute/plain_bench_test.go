package compute_test

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/bdev/device"
	"github.com/bpfblk/bpfblk/bdev/device/demo"
	"github.com/bpfblk/bpfblk/compute"
	"github.com/bpfblk/bpfblk/compute/csd"
	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/compute/internal/plainscan"
	"github.com/bpfblk/bpfblk/filters"
	"github.com/bpfblk/bpfblk/poller"
)

// The scan against the plain Go loop it replaces: the same files, read by
// the same number of cores, with the same answer. The files are log-like
// text ("ERROR" in about one line of 600, so a few percent of the 4 KiB
// blocks match) written to /dev/shm when it exists (the page cache, as a
// warm scan finds it) and to the test's temporary directory otherwise.
var (
	plainFiles    = flag.Int("plain.files", 8, "BenchmarkScanVsPlainLoop: number of files")
	plainFileSize = flag.Int64("plain.size", 64<<20, "BenchmarkScanVsPlainLoop: bytes per file")
)

// logNeedle is what the benchmark looks for, as `bpfblk scan` does by
// default.
var logNeedle = []byte(demo.Pattern)

// logDir returns a fresh directory for the benchmark's files, on tmpfs if
// the machine has /dev/shm.
func logDir(b *testing.B) string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "bpfblk-bench-")
		if err == nil {
			b.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return b.TempDir()
}

// plainScan runs the plain Go loop (compute/internal/plainscan) over the
// files of size bytes each and returns the number of matching blocks.
func plainScan(b *testing.B, files []*os.File, size int64, workers int) uint64 {
	sizes := make([]int64, len(files))
	for i := range sizes {
		sizes[i] = size
	}
	n, _, err := plainscan.Scan(files, sizes, logNeedle, workers)
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// cpuTime is the CPU time the process has used so far, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// logFilter is `bpfblk scan`'s default filter: bpfblk_memmem per block.
func logFilter(b *testing.B) *engine.Executable {
	spec, err := filters.LoadPattern()
	if err != nil {
		b.Fatal(err)
	}
	var pat [8]byte
	copy(pat[:], logNeedle)
	p, err := engine.LoadSpec(spec, &engine.LoadOptions{Program: "pattern_memmem",
		Vars: map[string]any{"pattern": binary.LittleEndian.Uint64(pat[:]), "pattern_len": uint32(len(logNeedle))}})
	if err != nil {
		b.Fatal(err)
	}
	x, err := engine.Compile(p, nil)
	if err != nil {
		b.Fatal(err)
	}
	return x
}

// BenchmarkScanVsPlainLoop scans files of log text two ways on 1 and 2
// cores: "scan" is a host-engine scan of the files as namespaces of a
// file-backed controller (as `bpfblk scan --dev file:PATH,lba=4096
// --engine host`), "plain" is plainScan. Both report MB/s over the whole
// call, and cpu_s/GB, the CPU time the process spent per GB (which a
// loaded machine inflates less than the time: the same figure on 1 and 2
// cores means no work per byte was added by the second core); the scan also
// reports x_plain, the plain loop's time over the scan's in passes
// interleaved with its own (1 = as fast as the plain loop). Both must agree
// on the matches.
//
//	go test -run '^$' -bench ScanVsPlainLoop -benchtime 5x ./compute/
func BenchmarkScanVsPlainLoop(b *testing.B) {
	dir := logDir(b)
	paths, err := plainscan.WriteLogs(dir, *plainFiles, *plainFileSize)
	if err != nil {
		b.Fatal(err)
	}
	total := int64(len(paths)) * *plainFileSize
	var files []*os.File
	var addrs []string
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		files = append(files, f)
		addrs = append(addrs, "file:"+p+",lba=4096")
	}
	want := plainScan(b, files, *plainFileSize, 1)
	if want == 0 {
		b.Fatal("no block of the files matches")
	}
	set, err := device.Open(addrs, device.Options{Programs: csd.Runner{}})
	if err != nil {
		b.Fatal(err)
	}
	defer set.Close()
	cb, err := compute.NewBdev("bench", set.Bdevs)
	if err != nil {
		b.Fatal(err)
	}
	defer cb.Close()
	exe := logFilter(b)
	for _, cores := range []int{1, 2} {
		b.Run(fmt.Sprintf("scan/cores=%d", cores), func(b *testing.B) {
			g, err := poller.Start(poller.Config{Cores: fmt.Sprintf("0-%d", cores-1), NoPin: true})
			if err != nil {
				b.Fatal(err)
			}
			defer g.Stop()
			b.SetBytes(total)
			var scanT, plainT, cpu time.Duration
			b.ResetTimer()
			for range b.N {
				t0, c0 := time.Now(), cpuTime(b)
				st, err := cb.Scan(context.Background(), g, exe, cb.AllTargets(), compute.Options{Placement: compute.PlaceHost})
				scanT += time.Since(t0)
				cpu += cpuTime(b) - c0
				if err != nil || len(st.Faults) > 0 {
					b.Fatal(err, st.Faults)
				}
				if st.Matches != want {
					b.Fatalf("scan: %d matching blocks, plain loop %d", st.Matches, want)
				}
				// The baseline pass, interleaved, outside the timer.
				b.StopTimer()
				t0 = time.Now()
				if got := plainScan(b, files, *plainFileSize, cores); got != want {
					b.Fatalf("plain loop: %d then %d matching blocks", want, got)
				}
				plainT += time.Since(t0)
				b.StartTimer()
			}
			b.ReportMetric(plainT.Seconds()/scanT.Seconds(), "x_plain")
			b.ReportMetric(cpu.Seconds()/(float64(total)*float64(b.N)/1e9), "cpu_s/GB")
		})
		b.Run(fmt.Sprintf("plain/cores=%d", cores), func(b *testing.B) {
			b.SetBytes(total)
			c0 := cpuTime(b)
			for range b.N {
				if got := plainScan(b, files, *plainFileSize, cores); got != want {
					b.Fatalf("plain loop: %d then %d matching blocks", want, got)
				}
			}
			b.ReportMetric((cpuTime(b)-c0).Seconds()/(float64(total)*float64(b.N)/1e9), "cpu_s/GB")
		})
	}
}
