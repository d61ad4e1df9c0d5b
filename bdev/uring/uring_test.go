//go:build linux

package uring_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/bdev/uring"
	"golang.org/x/sys/unix"
)

// pattern is the content of test files: every 512-byte block distinct.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i/512*31 + i)
	}
	return b
}

func writeFile(t testing.TB, dir string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, "data")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func open(t testing.TB, cfg uring.Config) *uring.Device {
	t.Helper()
	d, err := uring.Open("uring0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Bdev.Close(); err != nil {
			t.Error(err)
		}
	})
	return d
}

// channel opens a read-write descriptor and a channel of depth qd.
func channel(t testing.TB, d *uring.Device, qd int) (*bdev.Desc, *bdev.Channel) {
	t.Helper()
	desc, err := bdev.Open(d.Bdev, true)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := desc.NewChannel(qd)
	if err != nil {
		desc.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ch.Close(); err != nil {
			t.Error(err)
		}
		desc.Close()
	})
	return desc, ch
}

type result struct {
	n   int
	err error
}

func (r *result) cb(io *bdev.IO) {
	r.n++
	if r.err == nil {
		r.err = io.Err()
	}
}

func (r *result) Complete(_, _ uint64, err error) {
	r.n++
	if r.err == nil {
		r.err = err
	}
}

func wait(t testing.TB, ch *bdev.Channel, r *result, n int) {
	t.Helper()
	// The kernel may hand an I/O to a worker thread, which a loaded machine
	// can leave unscheduled for a while: the limit is time, not polls.
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; r.n < n; i++ {
		ch.Poll()
		if i%4096 == 0 && time.Now().After(deadline) {
			t.Fatalf("%d of %d I/Os completed in 30 s", r.n, n)
		}
	}
}

// roundTrip checks reads of a file's blocks, a write, and the write on
// disk, through both completion forms.
func roundTrip(t *testing.T, d *uring.Device, path string, data []byte) {
	bs := d.Bdev.BlockSize()
	desc, ch := channel(t, d, 8)
	buf, err := desc.AllocBuffer(64 << 10)
	if err != nil {
		t.Fatal(err)
	}
	defer desc.FreeBuffer(buf)
	var r result
	// A whole-file read in 64 KiB pieces, callback form.
	per := uint64(len(buf.Bytes) / bs)
	for lba := uint64(0); lba < d.Bdev.NumBlocks(); lba += per {
		n := min(per, d.Bdev.NumBlocks()-lba)
		part := buf.Slice(0, int(n)*bs)
		if err := ch.Read(&part, lba, n, r.cb, nil); err != nil {
			t.Fatal(err)
		}
		wait(t, ch, &r, r.n+1)
		if r.err != nil {
			t.Fatal(r.err)
		}
		if off := int(lba) * bs; !bytes.Equal(part.Bytes, data[off:off+len(part.Bytes)]) {
			t.Fatalf("blocks %d+%d differ from the file", lba, n)
		}
	}
	// A write of 2 blocks at LBA 3, tagged form, then read back.
	w := buf.Slice(0, 2*bs)
	for i := range w.Bytes {
		w.Bytes[i] = 0xA5
	}
	if err := ch.WriteTagged(&w, 3, 2, &r, 0); err != nil {
		t.Fatal(err)
	}
	wait(t, ch, &r, r.n+1)
	if err := ch.Flush(r.cb, nil); err != nil {
		t.Fatal(err)
	}
	wait(t, ch, &r, r.n+1)
	if r.err != nil {
		t.Fatal(r.err)
	}
	got := make([]byte, len(data))
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	want := append([]byte(nil), data...)
	copy(want[3*bs:5*bs], bytes.Repeat([]byte{0xA5}, 2*bs))
	if !bytes.Equal(got, want) {
		t.Fatal("the file does not hold what was written")
	}
	// Write Zeroes and Unmap read back as zeroes.
	for _, op := range []func(lba, n uint64, cb func(*bdev.IO), arg any) error{ch.WriteZeroes, ch.Unmap} {
		if err := op(3, 1, r.cb, nil); err != nil {
			t.Fatal(err)
		}
		wait(t, ch, &r, r.n+1)
		rb := buf.Slice(0, bs)
		if err := ch.ReadTagged(&rb, 3, 1, &r, 1); err != nil {
			t.Fatal(err)
		}
		wait(t, ch, &r, r.n+1)
		if r.err != nil {
			t.Fatal(r.err)
		}
		if !bytes.Equal(rb.Bytes, make([]byte, bs)) {
			t.Fatal("zeroed block reads back non-zero")
		}
		copy(rb.Bytes, bytes.Repeat([]byte{1}, bs))
	}
}

func TestFile(t *testing.T) {
	data := pattern(1 << 20)
	for _, sqpoll := range []bool{false, true} {
		path := writeFile(t, t.TempDir(), data)
		d := open(t, uring.Config{Path: path, SQPoll: sqpoll})
		if d.Bdev.BlockSize() != 512 || d.Bdev.NumBlocks() != 2048 {
			t.Fatalf("block size %d, %d blocks; want 512, 2048", d.Bdev.BlockSize(), d.Bdev.NumBlocks())
		}
		t.Logf("sqpoll=%v direct=%v note=%q product=%q", sqpoll, d.Direct, d.Note, d.Bdev.Info().Product)
		roundTrip(t, d, path, data)
	}
}

// TestTmpfs opens a file on tmpfs, which takes O_DIRECT on recent kernels
// and refuses it on older ones: the device is buffered with a note exactly
// when O_DIRECT is refused, and works either way. tmpfs cannot read
// without blocking (a kernel that could would be told by RWF_NOWAIT), so
// its reads and writes are done inline: no SQE for them, unless the
// device is opened with noinline.
func TestTmpfs(t *testing.T) {
	dir, err := os.MkdirTemp("/dev/shm", "uring")
	if err != nil {
		t.Skipf("no tmpfs at /dev/shm: %v", err)
	}
	defer os.RemoveAll(dir)
	data := pattern(256 << 10)
	path := writeFile(t, dir, data)
	fd, derr := unix.Open(path, unix.O_RDONLY|unix.O_DIRECT, 0)
	if derr == nil {
		unix.Close(fd)
	}
	_, nerr := unix.Preadv2(int(must(os.Open(path)).Fd()), [][]byte{make([]byte, 512)}, 0, unix.RWF_NOWAIT)
	for _, noInline := range []bool{false, true} {
		path := writeFile(t, dir, data) // afresh: roundTrip writes
		d := open(t, uring.Config{Path: path, LBASize: 4096, NoInline: noInline})
		if d.Direct != (derr == nil) || d.Direct != (d.Note == "") {
			t.Fatalf("tmpfs (O_DIRECT open: %v): direct=%v note=%q", derr, d.Direct, d.Note)
		}
		if want := !noInline && nerr == unix.EOPNOTSUPP; d.Inline != want {
			t.Fatalf("noinline=%v, RWF_NOWAIT read: %v: inline=%v", noInline, nerr, d.Inline)
		}
		if d.Bdev.BlockSize() != 4096 || d.Bdev.NumBlocks() != 64 {
			t.Fatalf("block size %d, %d blocks", d.Bdev.BlockSize(), d.Bdev.NumBlocks())
		}
		var sqes uint32
		uring.SetOnSubmit(func(n uint32) { sqes += n })
		desc, ch := channel(t, d, 4)
		buf, _ := desc.AllocBuffer(8192)
		var r result
		for lba := range uint64(8) {
			if err := ch.ReadTagged(&buf, lba*2, 2, &r, 0); err != nil {
				t.Fatal(err)
			}
			wait(t, ch, &r, r.n+1)
			if r.err != nil || !bytes.Equal(buf.Bytes, data[lba*8192:lba*8192+8192]) {
				t.Fatalf("noinline=%v inline=%v read %d: %v, or wrong data (%d bytes, first diff %d)", noInline, d.Inline, lba, r.err, len(buf.Bytes), firstDiff(buf.Bytes, data[lba*8192:]))
			}
		}
		desc.FreeBuffer(buf)
		uring.SetOnSubmit(nil)
		if d.Inline != (sqes == 0) {
			t.Fatalf("inline=%v: 8 reads submitted %d SQEs", d.Inline, sqes)
		}
		roundTrip(t, d, path, data)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestBuffered asks for buffered I/O.
func TestBuffered(t *testing.T) {
	data := pattern(256 << 10)
	path := writeFile(t, t.TempDir(), data)
	d := open(t, uring.Config{Path: path, Buffered: true})
	if d.Direct || !strings.Contains(d.Bdev.Info().Product, "buffered") {
		t.Fatalf("direct=%v product=%q", d.Direct, d.Bdev.Info().Product)
	}
	roundTrip(t, d, path, data)
}

// TestPlainMemory reads into memory that is not the bdev's (unaligned, not
// registered): it goes through plain READ on the buffered descriptor.
func TestPlainMemory(t *testing.T) {
	data := pattern(64 << 10)
	path := writeFile(t, t.TempDir(), data)
	d := open(t, uring.Config{Path: path})
	_, ch := channel(t, d, 4)
	raw := make([]byte, 4096+1)
	buf := bdev.Buffer{Bytes: raw[1:]}
	var r result
	if err := ch.Read(&buf, 8, 8, r.cb, nil); err != nil {
		t.Fatal(err)
	}
	wait(t, ch, &r, 1)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !bytes.Equal(buf.Bytes, data[4096:8192]) {
		t.Fatal("wrong data")
	}
}

// TestShortRead shrinks the file under an open bdev: a read across the
// new end continues past its short first part and then fails with
// ErrShort, without hanging.
func TestShortRead(t *testing.T) {
	data := pattern(64 << 10)
	path := writeFile(t, t.TempDir(), data)
	d := open(t, uring.Config{Path: path})
	desc, ch := channel(t, d, 4)
	if err := os.Truncate(path, 8192+512); err != nil {
		t.Fatal(err)
	}
	buf, _ := desc.AllocBuffer(16384)
	defer desc.FreeBuffer(buf)
	var r result
	if err := ch.Read(&buf, 0, 32, r.cb, nil); err != nil {
		t.Fatal(err)
	}
	wait(t, ch, &r, 1)
	if !errors.Is(r.err, uring.ErrShort) {
		t.Fatalf("read past the end: %v, want ErrShort", r.err)
	}
	if !bytes.Equal(buf.Bytes[:8192+512], data[:8192+512]) {
		t.Fatal("the part before the end was not read")
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	for name, cfg := range map[string]uring.Config{
		"missing":    {Path: filepath.Join(dir, "nope")},
		"directory":  {Path: dir},
		"char dev":   {Path: "/dev/null"},
		"too small":  {Path: writeFile(t, dir, make([]byte, 100))},
		"4k too big": {Path: writeFile(t, t.TempDir(), make([]byte, 2048)), LBASize: 4096},
	} {
		if d, err := uring.Open("u", cfg); err == nil {
			d.Bdev.Close()
			t.Errorf("%s: opened", name)
		}
	}
}

func TestParseAddr(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uring.Config
		ok   bool
	}{
		{"/dev/nvme0n1", uring.Config{Path: "/dev/nvme0n1"}, true},
		{"f,sqpoll,lba=4096", uring.Config{Path: "f", SQPoll: true, LBASize: 4096}, true},
		{"f,buffered", uring.Config{Path: "f", Buffered: true}, true},
		{"f,noinline,buffered", uring.Config{Path: "f", Buffered: true, NoInline: true}, true},
		{"", uring.Config{}, false},
		{"f,lba=1024", uring.Config{}, false},
		{"f,fast", uring.Config{}, false},
	} {
		got, err := uring.ParseAddr(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseAddr(%q) = %+v, %v", tc.in, got, err)
		}
	}
}

type counter struct{ n int }

func (c *counter) Complete(_, _ uint64, err error) {
	if err != nil {
		panic(err)
	}
	c.n++
}

// TestNoAllocations: a tagged read and its completion allocate nothing,
// through the ring (a disk file) and inline (tmpfs).
func TestNoAllocations(t *testing.T) {
	dirs := []string{t.TempDir()}
	if d, err := os.MkdirTemp("/dev/shm", "uring"); err == nil {
		defer os.RemoveAll(d)
		dirs = append(dirs, d)
	}
	for _, dir := range dirs {
		noAllocations(t, dir)
	}
}

func noAllocations(t *testing.T, dir string) {
	path := writeFile(t, dir, pattern(1<<20))
	d := open(t, uring.Config{Path: path})
	desc, ch := channel(t, d, 4)
	buf, _ := desc.AllocBuffer(4096)
	defer desc.FreeBuffer(buf)
	var c counter
	var cb result
	done := cb.cb // a method value made once, as a real caller would
	lba := uint64(0)
	allocs := testing.AllocsPerRun(200, func() {
		ch.ReadTagged(&buf, lba, 8, &c, 0)
		ch.Read(&buf, lba, 8, done, nil)
		lba = (lba + 8) % 2048
		for n := c.n + cb.n + 2; c.n+cb.n < n; {
			ch.Poll()
		}
	})
	if allocs != 0 {
		t.Fatalf("%s (inline %v): %.1f allocations per read", dir, d.Inline, allocs)
	}
}

// TestPassthruRefusesNonNVMe: a device that is not an NVMe namespace's
// generic device is refused at open, naming the ioctl that failed.
func TestPassthruRefusesNonNVMe(t *testing.T) {
	for _, p := range []string{"/dev/null", filepath.Join(t.TempDir(), "none")} {
		pt, err := uring.OpenPassthru(p)
		if err == nil {
			pt.Close()
			t.Fatalf("%s opened for NVMe passthrough", p)
		}
		t.Log(err)
	}
}

func TestLookupAndGenericPath(t *testing.T) {
	path := writeFile(t, t.TempDir(), pattern(8192))
	d, err := uring.Open("uring0", uring.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := uring.Lookup(d.Bdev); !ok || got != d || got.Path != path || got.BlockDevice {
		t.Fatalf("Lookup = %+v, %v", got, ok)
	}
	other, _ := bdev.NewNull("null0", 512, 8)
	if _, ok := uring.Lookup(other); ok {
		t.Fatal("a null bdev looked up as a uring device")
	}
	d.Bdev.Close()
	if _, ok := uring.Lookup(d.Bdev); ok {
		t.Fatal("a closed device is still looked up")
	}
	for in, want := range map[string]string{"/dev/nvme0n1": "/dev/ng0n1", "/dev/nvme12n3": "/dev/ng12n3", "/dev/nvme0n1p1": "", "/dev/sda": "", "/tmp/nvme0n1": "", "/dev/nvme0": ""} {
		if got := uring.GenericPath(in); got != want {
			t.Errorf("GenericPath(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestOneEnterPerPoll: I/Os submitted between two polls go to the kernel
// in one batch, from Poll, and a Poll with nothing new submits nothing.
func TestOneEnterPerPoll(t *testing.T) {
	path := writeFile(t, t.TempDir(), pattern(1<<20))
	d := open(t, uring.Config{Path: path})
	desc, ch := channel(t, d, 16)
	var batches []uint32
	uring.SetOnSubmit(func(n uint32) { batches = append(batches, n) })
	defer uring.SetOnSubmit(nil)
	bufs := make([]bdev.Buffer, 8)
	var r result
	for i := range bufs {
		bufs[i], _ = desc.AllocBuffer(4096)
		defer desc.FreeBuffer(bufs[i])
		if err := ch.ReadTagged(&bufs[i], uint64(i*8), 8, &r, uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if len(batches) != 0 {
		t.Fatalf("submitted before Poll: %v", batches)
	}
	ch.Poll()
	if len(batches) != 1 || batches[0] != 8 {
		t.Fatalf("first Poll submitted %v, want one batch of 8", batches)
	}
	wait(t, ch, &r, 8)
	if r.err != nil {
		t.Fatal(r.err)
	}
	for range 10 {
		ch.Poll()
	}
	if len(batches) != 1 {
		t.Fatalf("polls with nothing new submitted %v", batches[1:])
	}
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if i >= len(b) || a[i] != b[i] {
			return i
		}
	}
	return -1
}
