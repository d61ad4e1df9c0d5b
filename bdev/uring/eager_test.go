package uring_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/bdev/uring"
)

// resubmitter reads block after block from its completion callback, as a
// perf job or a scan at depth does, and notes whether each read reached
// the kernel before Submit returned.
type resubmitter struct {
	t       *testing.T
	ch      *bdev.Channel
	buf     *bdev.Buffer
	data    []byte
	left    int
	n       int
	err     error
	sqes    *uint32
	eager   int // reads the kernel had when ReadTagged returned
	batched int // reads left for the poll's own enter
}

func (r *resubmitter) Complete(tag, _ uint64, err error) {
	r.n++
	if err == nil && !bytes.Equal(r.buf.Bytes, r.data[tag*4096:tag*4096+4096]) {
		r.t.Errorf("read of block %d: wrong data", tag)
	}
	if r.err == nil {
		r.err = err
	}
	if r.left == 0 {
		return
	}
	r.left--
	next := (tag + 1) % 64
	before := *r.sqes
	if err := r.ch.ReadTagged(r.buf, next*8, 8, r, next); err != nil {
		r.t.Error(err)
		return
	}
	if *r.sqes != before {
		r.eager++
	} else {
		r.batched++
	}
}

// TestEagerSubmit: a read submitted from a completion callback goes to the
// kernel at once by default, and with the poll's one enter with
// Config.Batch; the data is right either way.
func TestEagerSubmit(t *testing.T) {
	data := pattern(64 * 4096)
	path := writeFile(t, t.TempDir(), data)
	for _, batch := range []bool{false, true} {
		d := open(t, uring.Config{Path: path, NoInline: true, Batch: batch})
		desc, ch := channel(t, d, 4)
		buf, err := desc.AllocBuffer(4096)
		if err != nil {
			t.Fatal(err)
		}
		var sqes uint32
		uring.SetOnSubmit(func(n uint32) { sqes += n })
		r := &resubmitter{t: t, ch: ch, buf: &buf, data: data, left: 40, sqes: &sqes}
		if err := ch.ReadTagged(&buf, 0, 8, r, 0); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for r.n < 41 {
			ch.Poll()
			if r.err != nil {
				t.Fatal(r.err)
			}
			if time.Now().After(deadline) {
				t.Fatalf("batch=%v: %d of 41 reads completed in 30 s", batch, r.n)
			}
		}
		uring.SetOnSubmit(nil)
		desc.FreeBuffer(buf)
		if batch && (r.eager != 0 || r.batched != 40) {
			t.Errorf("batch: %d reads went to the kernel from the callback, %d with the poll; want 0 and 40", r.eager, r.batched)
		}
		if !batch && (r.eager != 40 || r.batched != 0) {
			t.Errorf("default: %d reads went to the kernel from the callback, %d with the poll; want 40 and 0", r.eager, r.batched)
		}
	}
}
