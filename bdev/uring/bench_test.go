//go:build linux

package uring_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/bdev/uring"
)

// loop keeps qd tagged 4 KiB random reads in flight until b.N complete.
type loop struct {
	ch     *bdev.Channel
	bufs   []bdev.Buffer
	rng    *rand.Rand
	blocks uint64
	done   int
	err    error
}

func (l *loop) Complete(tag, _ uint64, err error) {
	l.done++
	if err != nil && l.err == nil {
		l.err = err
	}
}

func (l *loop) submit(tag uint64) error {
	return l.ch.ReadTagged(&l.bufs[tag], l.rng.Uint64N(l.blocks)*8, 8, l, tag)
}

// BenchmarkRandRead4k measures 4 KiB random reads through the module at
// several queue depths, on a 64 MiB file in the test's temporary
// directory (O_DIRECT where its file system allows) and, where there is
// one, on tmpfs. allocs/op is per I/O and must be 0.
func BenchmarkRandRead4k(b *testing.B) {
	dirs := []string{b.TempDir()}
	if d, err := os.MkdirTemp("/dev/shm", "uring-bench"); err == nil {
		defer os.RemoveAll(d)
		dirs = append(dirs, d)
	}
	for i, dir := range dirs {
		path := writeFile(b, dir, pattern(64<<20))
		for _, sqpoll := range []bool{false, true} {
			for _, qd := range []int{1, 32} {
				where := map[int]string{0: "disk", 1: "tmpfs"}[i]
				b.Run(fmt.Sprintf("%s/sqpoll=%v/QD%d", where, sqpoll, qd), func(b *testing.B) {
					benchRead(b, uring.Config{Path: path, SQPoll: sqpoll}, qd, nil)
				})
			}
		}
		// A channel of an owner, on the ring the owner's channels share.
		b.Run(fmt.Sprintf("%s/owner/QD32", map[int]string{0: "disk", 1: "tmpfs"}[i]), func(b *testing.B) {
			benchRead(b, uring.Config{Path: path}, 32, new(owner))
		})
		if i == 1 {
			// tmpfs through the ring, as io_uring hands it to workers.
			for _, qd := range []int{1, 32} {
				b.Run(fmt.Sprintf("tmpfs/noinline/QD%d", qd), func(b *testing.B) {
					benchRead(b, uring.Config{Path: path, NoInline: true}, qd, nil)
				})
			}
		}
	}
}

// benchRead reads 4 KiB blocks at random at queue depth qd, on a channel
// of o (nil: a channel of its own).
func benchRead(b *testing.B, cfg uring.Config, qd int, o bdev.Owner) {
	d, err := uring.Open("uring0", cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Bdev.Close()
	desc, err := bdev.Open(d.Bdev, false)
	if err != nil {
		b.Fatal(err)
	}
	defer desc.Close()
	var ch *bdev.Channel
	if o != nil {
		ch, err = desc.NewChannelOn(o, qd)
	} else {
		ch, err = desc.NewChannel(qd)
	}
	if err != nil {
		b.Fatal(err)
	}
	defer ch.Close()
	l := &loop{ch: ch, rng: rand.New(rand.NewPCG(1, 2)), blocks: d.Bdev.NumBlocks() / 8}
	for range qd {
		buf, err := desc.AllocBuffer(4096)
		if err != nil {
			b.Fatal(err)
		}
		defer desc.FreeBuffer(buf)
		l.bufs = append(l.bufs, buf)
	}
	b.ReportAllocs()
	b.ResetTimer()
	inflight := 0
	for i := range min(qd, b.N) {
		if err := l.submit(uint64(i)); err != nil {
			b.Fatal(err)
		}
		inflight++
	}
	submitted := inflight
	for l.done < b.N {
		before := l.done
		ch.Poll()
		// Refill the slots that completed (tags are reused in order of
		// completion; any free tag will do, so reuse 0..n-1 of those done).
		for k := before; k < l.done && submitted < b.N; k++ {
			if err := l.submit(uint64(k % qd)); err != nil {
				b.Fatal(err)
			}
			submitted++
		}
	}
	b.StopTimer()
	if l.err != nil {
		b.Fatal(l.err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "IOPS")
}
