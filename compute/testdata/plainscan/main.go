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
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/bpfblk/bpfblk/compute/internal/plainscan"
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
		if _, err := plainscan.WriteLogs(flag.Arg(0), *n, *size); err != nil {
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
	matches, total, err := plainscan.Scan(files, sizes, []byte(*pattern), *workers)
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
