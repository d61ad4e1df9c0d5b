package bench

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/poller"
)

func TestRunOnMemoryBdevs(t *testing.T) {
	g, err := poller.Start(poller.Config{Cores: "0-1", NoPin: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	null, _ := bdev.NewNull("null0", 512, 1<<20)
	mem, _ := bdev.NewMalloc("malloc0", 4096, 256)
	var descs []*bdev.Desc
	for _, b := range []*bdev.Bdev{null, mem} {
		d, err := bdev.Open(b, true)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		descs = append(descs, d)
	}
	w := Workload{Pattern: RandRW, ReadPercent: 50, BlockSize: 4096, QueueDepth: 16, Duration: 200 * time.Millisecond}
	var ticks int
	rep, err := Run(context.Background(), g, descs, w, Options{Seed: 1, ProgressEvery: 50 * time.Millisecond, Progress: func(Progress) { ticks++ }})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Targets) != 2 || rep.Targets[0].Name != "null0" {
		t.Fatalf("targets %+v", rep.Targets)
	}
	for _, r := range rep.Targets {
		if r.IOs == 0 || r.Errors != 0 || r.Bytes != (r.IOs-r.Errors)*4096 || r.Latency.Count() != r.IOs {
			t.Fatalf("%s: %d I/Os, %d errors, %d bytes, %d latencies", r.Name, r.IOs, r.Errors, r.Bytes, r.Latency.Count())
		}
		if r.Elapsed < w.Duration || r.Elapsed > 10*w.Duration+5*time.Second {
			t.Fatalf("%s ran %v for a %v workload", r.Name, r.Elapsed, w.Duration)
		}
	}
	if rep.Total.IOs != rep.Targets[0].IOs+rep.Targets[1].IOs {
		t.Fatal("total is not the sum of the targets")
	}
	// A 50% mix: reads and writes counted apart, adding up to the whole.
	for _, r := range append(rep.Targets, rep.Total) {
		rd, wr := r.Read, r.Write
		if rd == nil || wr == nil || rd.IOs == 0 || wr.IOs == 0 || rd.IOs+wr.IOs != r.IOs ||
			rd.Bytes+wr.Bytes != r.Bytes || rd.Latency.Count()+wr.Latency.Count() != r.IOs {
			t.Fatalf("%s: %d I/Os, split into %+v and %+v", r.Name, r.IOs, rd, wr)
		}
		if share := float64(rd.IOs) / float64(r.IOs); share < 0.4 || share > 0.6 {
			t.Fatalf("%s: %.2f of the I/Os are reads in a 50%% mix", r.Name, share)
		}
	}
	if ticks == 0 {
		t.Fatal("no progress reported")
	}
	var out bytes.Buffer
	if err := rep.Table(&out); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
}

func TestRunRejectsBadInput(t *testing.T) {
	g, err := poller.Start(poller.Config{Cores: "0", NoPin: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	b, _ := bdev.NewNull("null0", 4096, 1024)
	ro, _ := bdev.Open(b, false)
	defer ro.Close()
	w := Workload{Pattern: RandRead, BlockSize: 512, QueueDepth: 4, Duration: time.Second}
	if _, err := Run(context.Background(), g, []*bdev.Desc{ro}, w, Options{}); err == nil {
		t.Fatal("512-byte I/O on a 4096-byte bdev accepted")
	}
	w.BlockSize, w.Pattern = 4096, Write
	if _, err := Run(context.Background(), g, []*bdev.Desc{ro}, w, Options{}); err == nil {
		t.Fatal("write workload on a read-only target accepted")
	}
	if _, err := Run(context.Background(), g, nil, w, Options{}); err == nil {
		t.Fatal("no targets accepted")
	}
}

func TestRunCancel(t *testing.T) {
	g, _ := poller.Start(poller.Config{Cores: "0", NoPin: true})
	defer g.Stop()
	b, _ := bdev.NewNull("null0", 4096, 1024)
	d, _ := bdev.Open(b, false)
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	w := Workload{Pattern: RandRead, BlockSize: 4096, QueueDepth: 8, Duration: time.Hour}
	rep, err := Run(ctx, g, []*bdev.Desc{d}, w, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 20*time.Second || rep.Total.IOs == 0 {
		t.Fatalf("cancelled run took %v with %d I/Os", time.Since(start), rep.Total.IOs)
	}
}
