// Command plainscan is the baseline of `bpfblk scan --placement host` over
// files: the plain Go loop a scan replaces. It preads the files in 256 KiB
// chunks taken from one shared cursor by -c goroutines and counts the 4 KiB
// blocks that contain the pattern (bytes.Contains), then prints the count
// and the rate as `bpfblk scan --count` and its summary would. With -gen it
// writes log-like text files instead (the format of BenchmarkScanVsPlainLoop).
//
//	go run ./compute/testdata/plainscan -gen -n 8 -size 134217728 /dev/shm/logs
//	go run ./compute/testdata/plainscan -c 1 /dev/shm/logs/log*.txt
//	bpfblk scan --count --placement host -c 1 --dev file:/dev/shm/logs/log0.txt,lba=4096 ...
package main

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	gen := flag.Bool("gen", false, "write -n files of -size bytes of log text into the directory given")
	n := flag.Int("n", 8, "-gen: number of files")
	size := flag.Int64("size", 128<<20, "-gen: bytes per file")
	workers := flag.Int("c", 1, "goroutines scanning")
	pattern := flag.String("pattern", "ERROR", "what a matching block contains")
	flag.Parse()
	if *gen {
		if flag.NArg() != 1 {
			fail(fmt.Errorf("-gen takes one directory"))
		}
		if err := generate(flag.Arg(0), *n, *size); err != nil {
			fail(err)
		}
		return
	}
	if flag.NArg() == 0 || *workers < 1 {
		fail(fmt.Errorf("usage: plainscan [-c N] [-pattern P] FILE..."))
	}
	var files []*os.File
	var sizes []int64
	for _, p := range flag.Args() {
		f, err := os.Open(p)
		if err != nil {
			fail(err)
		}
		fi, err := f.Stat()
		if err != nil {
			fail(err)
		}
		files = append(files, f)
		sizes = append(sizes, fi.Size())
	}
	t0 := time.Now()
	matches, total, err := scan(files, sizes, []byte(*pattern), *workers)
	secs := time.Since(t0).Seconds()
	if err != nil {
		fail(err)
	}
	fmt.Println(matches)
	fmt.Fprintf(os.Stderr, "plain loop: scanned %d bytes in %.3fs (%.2f GB/s) on %d goroutines\n", total, secs, float64(total)/secs/1e9, *workers)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "plainscan:", err)
	os.Exit(1)
}

// scan counts the 4 KiB blocks of the files that contain pat.
func scan(files []*os.File, sizes []int64, pat []byte, workers int) (uint64, uint64, error) {
	const chunk, block = 256 << 10, 4096
	type piece struct {
		f   *os.File
		off int64
		n   int
	}
	var pieces []piece
	var total uint64
	for i, f := range files {
		for off := int64(0); off < sizes[i]; off += chunk {
			pieces = append(pieces, piece{f, off, int(min(chunk, sizes[i]-off))})
		}
		total += uint64(sizes[i])
	}
	var next atomic.Int64
	var matches atomic.Uint64
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, chunk)
			var m uint64
			for {
				k := next.Add(1) - 1
				if k >= int64(len(pieces)) {
					break
				}
				p := pieces[k]
				got, err := p.f.ReadAt(buf[:p.n], p.off)
				if got < p.n {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				for i := 0; i < got; i += block {
					if bytes.Contains(buf[i:min(i+block, got)], pat) {
						m++
					}
				}
			}
			matches.Add(m)
		}()
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return 0, 0, *e
	}
	return matches.Load(), total, nil
}

// generate writes n files of log text: "ERROR" in about one line of 600.
func generate(dir string, n int, size int64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	levels := []string{"INFO ", "INFO ", "INFO ", "DEBUG", "WARN "}
	for i := range n {
		rng := rand.New(rand.NewPCG(uint64(i), 42))
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("log%d.txt", i)))
		if err != nil {
			return err
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
				f.Close()
				return err
			}
			written += k
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	return nil
}
