//go:build linux

package uring_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/bpfblk/bpfblk/bdev/uring"
	"golang.org/x/sys/unix"
)

// loopDevice attaches backing to a free loop device with the given
// logical block size and returns its path. It skips the test where loop
// devices cannot be made (not root, no loop driver).
func loopDevice(t *testing.T, backing string, blockSize uint32) string {
	t.Helper()
	ctl, err := unix.Open("/dev/loop-control", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no loop devices here: %v", err)
	}
	defer unix.Close(ctl)
	n, err := unix.IoctlRetInt(ctl, unix.LOOP_CTL_GET_FREE)
	if err != nil {
		t.Skipf("no free loop device: %v", err)
	}
	path := fmt.Sprintf("/dev/loop%d", n)
	dev, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("open %s: %v", path, err)
	}
	defer unix.Close(dev)
	bf, err := os.OpenFile(backing, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer bf.Close()
	cfg := unix.LoopConfig{Fd: uint32(bf.Fd()), Size: blockSize}
	if err := unix.IoctlLoopConfigure(dev, &cfg); err != nil {
		t.Skipf("LOOP_CONFIGURE %s: %v", path, err)
	}
	t.Cleanup(func() {
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err == nil {
			unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.LOOP_CLR_FD, 0)
			unix.Close(fd)
		}
	})
	return path
}

// TestLoopDevice runs the round trip on a block device: a loop device over
// a file in RAM (tmpfs) or on disk, with 4096-byte logical blocks, which
// the bdev must take from the device.
func TestLoopDevice(t *testing.T) {
	dir := t.TempDir()
	if d, err := os.MkdirTemp("/dev/shm", "uring-loop"); err == nil {
		dir = d
		defer os.RemoveAll(d)
	}
	data := pattern(2 << 20)
	backing := filepath.Join(dir, "backing")
	if err := os.WriteFile(backing, data, 0o600); err != nil {
		t.Fatal(err)
	}
	path := loopDevice(t, backing, 4096)
	for _, sqpoll := range []bool{false, true} {
		d, err := uring.Open("uring0", uring.Config{Path: path, SQPoll: sqpoll})
		if err != nil {
			t.Fatal(err)
		}
		if d.Bdev.BlockSize() != 4096 || d.Bdev.NumBlocks() != 512 || !d.Direct {
			t.Fatalf("%s: block size %d, %d blocks, direct %v; want 4096, 512, true", path, d.Bdev.BlockSize(), d.Bdev.NumBlocks(), d.Direct)
		}
		t.Run(fmt.Sprintf("sqpoll=%v", sqpoll), func(t *testing.T) { roundTrip(t, d, backing, data) })
		if err := d.Bdev.Close(); err != nil {
			t.Fatal(err)
		}
		// The next round starts from what this one wrote.
		if data, err = os.ReadFile(backing); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := uring.Open("u", uring.Config{Path: path, LBASize: 512}); err == nil {
		t.Fatal("lba=512 on a 4096-byte device opened")
	}
}
