// Package plainscan is the baseline the host-engine scan is measured
// against: the plain Go loop a scan of files replaces, and the log-like
// text it is measured on. BenchmarkScanVsPlainLoop (package compute) and
// the plainscan command (compute/testdata/plainscan) both use it, so the
// benchmark and the command-line comparison run the same loop over the
// same files.
package plainscan

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pkg/errors"
)

// Chunk and Block are the loop's read size and the unit it matches in, as
// `bpfblk scan --chunk 262144 --dev file:PATH,lba=4096` reads and matches.
const (
	Chunk = 256 << 10
	Block = 4096
)

// WriteLogs writes n files of size bytes of log-like text, log0.txt ...,
// into dir (made if missing) and returns their paths. About one line in
// 600 is at level ERROR; the text depends only on n and size.
func WriteLogs(dir string, n int, size int64) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, errors.Wrap(err, "plainscan")
	}
	levels := []string{"INFO ", "INFO ", "INFO ", "DEBUG", "WARN "}
	paths := make([]string, 0, n)
	for i := range n {
		rng := rand.New(rand.NewPCG(uint64(i), 42))
		p := filepath.Join(dir, fmt.Sprintf("log%d.txt", i))
		f, err := os.Create(p)
		if err != nil {
			return nil, errors.Wrap(err, "plainscan")
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
				return nil, errors.Wrapf(err, "plainscan: write %s", p)
			}
			written += k
		}
		if err := f.Close(); err != nil {
			return nil, errors.Wrapf(err, "plainscan: write %s", p)
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// Scan counts the Block-sized blocks of the files (of the given sizes) that
// contain pat: workers goroutines take Chunk-sized pieces of the files from
// one shared cursor, pread them and run bytes.Contains on every block. It
// returns the matching blocks and the bytes read.
func Scan(files []*os.File, sizes []int64, pat []byte, workers int) (matches, total uint64, err error) {
	type piece struct {
		f   *os.File
		off int64
		n   int
	}
	var pieces []piece
	for i, f := range files {
		for off := int64(0); off < sizes[i]; off += Chunk {
			pieces = append(pieces, piece{f, off, int(min(Chunk, sizes[i]-off))})
		}
		total += uint64(sizes[i])
	}
	var next atomic.Int64
	var found atomic.Uint64
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, Chunk)
			var m uint64
			for {
				k := next.Add(1) - 1
				if k >= int64(len(pieces)) {
					break
				}
				p := pieces[k]
				got, err := p.f.ReadAt(buf[:p.n], p.off)
				if got < p.n {
					err = errors.Wrapf(err, "plainscan: %s: %d of %d bytes at %d", p.f.Name(), got, p.n, p.off)
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				for i := 0; i < got; i += Block {
					if bytes.Contains(buf[i:min(i+Block, got)], pat) {
						m++
					}
				}
			}
			found.Add(m)
		}()
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return 0, 0, *e
	}
	return found.Load(), total, nil
}
