package bdev_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/poller"
)

// A few lines of a library user: a reactor, a RAM bdev, and blocking
// WriteAt/ReadAt from ordinary code.
func ExampleSync() {
	g, _ := poller.Start(poller.Config{Cores: "0", NoPin: true})
	defer g.Stop()

	b, _ := bdev.NewMalloc("malloc0", 512, 2048) // 1 MiB
	desc, _ := bdev.Open(b, true)
	defer desc.Close()
	s, err := bdev.NewSync(desc, g.Reactors()[0])
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()

	ctx := context.Background()
	msg := make([]byte, 512)
	copy(msg, "hello, block device")
	if _, err := s.WriteAt(ctx, msg, 4096); err != nil {
		fmt.Println(err)
		return
	}
	got := make([]byte, 512)
	if _, err := s.ReadAt(ctx, got, 4096); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(string(bytes.TrimRight(got, "\x00")))
	// Output: hello, block device
}

func TestSyncLargeAndConcurrent(t *testing.T) {
	g, err := poller.Start(poller.Config{Cores: "0", NoPin: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	b, _ := bdev.NewMalloc("m", 4096, 2048)
	desc, _ := bdev.Open(b, true)
	defer desc.Close()
	s, err := bdev.NewSync(desc, g.Reactors()[0])
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// 3 MiB crosses the 1 MiB bounce chunks.
	big := make([]byte, 3<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	if n, err := s.WriteAt(ctx, big, 8192); err != nil || n != len(big) {
		t.Fatalf("WriteAt = %d, %v", n, err)
	}
	errs := make(chan error, 8)
	for w := 0; w < 8; w++ {
		go func() {
			got := make([]byte, 64<<10)
			off := int64(8192 + w*(64<<10))
			if _, err := s.ReadAt(ctx, got, off); err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(got, big[off-8192:off-8192+int64(len(got))]) {
				errs <- fmt.Errorf("reader %d: data differs", w)
				return
			}
			errs <- nil
		}()
	}
	for w := 0; w < 8; w++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.ReadAt(ctx, make([]byte, 100), 0); err == nil {
		t.Fatal("unaligned length accepted")
	}
	if _, err := s.ReadAt(ctx, make([]byte, 4096), 2048*4096); err == nil {
		t.Fatal("read past the end accepted")
	}
	done, stop := context.WithCancel(ctx)
	stop()
	if _, err := s.ReadAt(done, make([]byte, 4096), 0); err != context.Canceled {
		t.Fatalf("cancelled context: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
