package compute_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/bdev/device"
	"github.com/bpfblk/bpfblk/bdev/device/demo"
	"github.com/bpfblk/bpfblk/compute"
	"github.com/bpfblk/bpfblk/compute/csd"
	"github.com/bpfblk/bpfblk/compute/engine"
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

// writeLogFiles writes n files of size bytes of log-like text into dir.
func writeLogFiles(tb testing.TB, dir string, n int, size int64) []string {
	tb.Helper()
	var paths []string
	levels := []string{"INFO ", "INFO ", "INFO ", "DEBUG", "WARN "}
	paths = make([]string, 0, n)
	for i := range n {
		rng := rand.New(rand.NewPCG(uint64(i), 42))
		p := filepath.Join(dir, fmt.Sprintf("log%d.txt", i))
		f, err := os.Create(p)
		if err != nil {
			tb.Fatal(err)
		}
		buf := make([]byte, 0, 1<<20)
		var written int64
		ts := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
		for written < size {
			buf = buf[:0]
			for len(buf) < cap(buf)-256 {
				ts = ts.Add(time.Duration(rng.IntN(5000)) * time.Microsecond)
				lvl := levels[rng.IntN(len(levels))]
				if rng.IntN(600) == 0 {
					lvl = "ERROR"
				}
				buf = fmt.Appendf(buf, "%s host-%02d svc=%s level=%s req=%016x path=/v1/items/%d status=%d dur=%d.%dms\n",
					ts.Format("2006-01-02T15:04:05.000000Z"), rng.IntN(32), []string{"api", "db", "auth", "cache"}[rng.IntN(4)],
					lvl, rng.Uint64(), rng.IntN(100000), []int{200, 200, 200, 404, 500}[rng.IntN(5)], rng.IntN(300), rng.IntN(10))
			}
			k := min(int64(len(buf)), size-written)
			if _, err := f.Write(buf[:k]); err != nil {
				tb.Fatal(err)
			}
			written += k
		}
		if err := f.Close(); err != nil {
			tb.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

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

// plainScan is the plain Go loop: workers goroutines take 256 KiB chunks of
// the files from one shared cursor, pread them and run bytes.Contains on
// every 4 KiB block. It returns the number of matching blocks.
func plainScan(b *testing.B, files []*os.File, size int64, workers int) uint64 {
	const chunk = 256 << 10
	const block = 4096
	perFile := (size + chunk - 1) / chunk
	var next atomic.Int64
	var matches atomic.Uint64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, chunk)
			var n uint64
			for {
				k := next.Add(1) - 1
				if k >= perFile*int64(len(files)) {
					break
				}
				f, off := files[k/perFile], (k%perFile)*chunk
				got, err := f.ReadAt(buf[:min(chunk, size-off)], off)
				if err != nil && got < int(min(chunk, size-off)) {
					errs <- err
					return
				}
				for i := 0; i < got; i += block {
					if bytes.Contains(buf[i:min(i+block, got)], logNeedle) {
						n++
					}
				}
			}
			matches.Add(n)
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	return matches.Load()
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
	paths := writeLogFiles(b, dir, *plainFiles, *plainFileSize)
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
