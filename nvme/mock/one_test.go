package mock_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
)

func TestReadOneWriteOne(t *testing.T) {
	dev, err := mock.NewController(mock.NewBus(), mock.Config{MDTS: 1, Namespaces: []mock.NamespaceConfig{{Kind: mock.Memory, Size: 1 << 20, LBASize: 512}}})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	c, err := nvme.NewController(dev, nvme.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ns := c.Namespaces()[0]
	qp, err := c.NewQueuePair(8)
	if err != nil {
		t.Fatal(err)
	}
	buf, _ := dev.AllocDMA(3 * 4096)
	for i := range buf.Buf {
		buf.Buf[i] = byte(i * 7)
	}
	cb := &benchCompleter{}
	// 16 blocks of 512 B at offset 100 span three pages: PRP1 and PRP2.
	if err := qp.WriteOne(ns, 40, 16, buf, 100, cb, 7); err != nil {
		t.Fatal(err)
	}
	if err := qp.Drain(time.Second); err != nil || cb.err != nil || cb.done != 1 || cb.tag != 7 {
		t.Fatalf("write: %v %v, %d done, tag %d", err, cb.err, cb.done, cb.tag)
	}
	want := bytes.Clone(buf.Buf[100 : 100+8192])
	clear(buf.Buf)
	if err := qp.ReadOne(ns, 40, 16, buf, 4096, cb, 1<<63|9); err != nil {
		t.Fatal(err)
	}
	if err := qp.Drain(time.Second); err != nil || cb.err != nil || cb.done != 2 || cb.tag != 1<<63|9 {
		t.Fatalf("read: %v %v, %d done, tag %#x", err, cb.err, cb.done, cb.tag)
	}
	if !bytes.Equal(buf.Buf[4096:4096+8192], want) {
		t.Fatal("read back differs from what was written")
	}
	// Over MDTS (8 KiB): ReadOne never splits; Read would.
	if err := qp.ReadOne(ns, 0, 17, buf, 0, cb, 0); err == nil {
		t.Fatal("ReadOne took a transfer over MaxTransfer")
	}
	if err := qp.ReadOne(ns, 0, 0, buf, 0, cb, 0); err == nil {
		t.Fatal("ReadOne took zero blocks")
	}
	if err := qp.ReadOne(ns, 0, 16, buf, 3*4096-100, cb, 0); err == nil {
		t.Fatal("ReadOne ran past its buffer")
	}
	// A queue of 8 entries holds 7 commands.
	for i := 0; i < 7; i++ {
		if err := qp.ReadOne(ns, 0, 1, buf, 0, cb, 0); err != nil {
			t.Fatalf("submission %d: %v", i, err)
		}
	}
	if err := qp.ReadOne(ns, 0, 1, buf, 0, cb, 0); !errors.Is(err, nvme.ErrQueueFull) {
		t.Fatalf("full queue: %v", err)
	}
	if err := qp.Drain(time.Second); err != nil {
		t.Fatal(err)
	}
	qp.Close()
}
