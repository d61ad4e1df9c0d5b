package main

import (
	"testing"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/bdev/uring"
	"github.com/bpfblk/bpfblk/poller"
)

// TestPerfIdle: perf's reactors busy-poll when every target is a uring
// device (nothing wakes a parked reactor for a kernel completion), and
// keep the default idle strategy with any other target.
func TestPerfIdle(t *testing.T) {
	d, err := uring.Open("uring0", uring.Config{Path: logFile(t, 16)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Bdev.Close()
	null, err := bdev.NewNull("null0", 512, 16)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	var descs []*bdev.Desc
	for _, b := range []*bdev.Bdev{d.Bdev, null} {
		desc, err := bdev.Open(b, false)
		if err != nil {
			t.Fatal(err)
		}
		defer desc.Close()
		descs = append(descs, desc)
	}
	if got := perfIdle(descs[:1]); got != poller.BusyPoll {
		t.Errorf("uring target alone: idle %+v, want busy polling", got)
	}
	if got := perfIdle(descs); got != (poller.IdleStrategy{}) {
		t.Errorf("uring and null targets: idle %+v, want the default", got)
	}
	if got := perfIdle(descs[1:]); got != (poller.IdleStrategy{}) {
		t.Errorf("null target: idle %+v, want the default", got)
	}
}
