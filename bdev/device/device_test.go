package device

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/bdev/device/demo"
	"github.com/bpfblk/bpfblk/bdev/uring"
	"github.com/bpfblk/bpfblk/poller"
)

func TestParse(t *testing.T) {
	good := map[string]Spec{
		"mock":                 {Kind: Mock},
		"mock:null":            {Kind: MockNull},
		"file:/tmp/x":          {Kind: File, Path: "/tmp/x", LBASize: 512},
		"file:/tmp/x,lba=4096": {Kind: File, Path: "/tmp/x", LBASize: 4096},
		"pci:0000:01:00.0":     {Kind: PCI, Addr: "0000:01:00.0"},
		"pci:01:00.0":          {Kind: PCI, Addr: "0000:01:00.0"},
		"uring:/dev/nvme0n1":   {Kind: Uring, Path: "/dev/nvme0n1", Uring: uring.Config{Path: "/dev/nvme0n1"}},
		"uring:/x,sqpoll":      {Kind: Uring, Path: "/x", Uring: uring.Config{Path: "/x", SQPoll: true}},
	}
	for in, want := range good {
		got, err := Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "mock:", "mock:nul", "file:", "file:/x,lba=1024", "file:/x,blk=512", "pci:zz", "nvme0n1", "/dev/nvme0n1", "uring:", "uring:/x,lba=1", "uring:/x,polled"} {
		if _, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) accepted", in)
		}
	}
}

func TestOpenMockAndFiles(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	os.WriteFile(a, make([]byte, 1<<20), 0o644)
	os.WriteFile(b, make([]byte, 2<<20), 0o644)
	set, err := Open([]string{"mock:null", "file:" + a, "file:" + b + ",lba=4096"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	if len(set.Controllers) != 2 || len(set.Bdevs) != 3 {
		t.Fatalf("%d controllers, %d bdevs; want 2 and 3", len(set.Controllers), len(set.Bdevs))
	}
	if bd := set.Bdevs[1]; bd.BlockSize() != 512 || bd.NumBlocks() != 2048 {
		t.Fatalf("file a: %d blocks of %d", bd.NumBlocks(), bd.BlockSize())
	}
	if bd := set.Bdevs[2]; bd.BlockSize() != 4096 || bd.NumBlocks() != 512 {
		t.Fatalf("file b: %d blocks of %d", bd.NumBlocks(), bd.BlockSize())
	}
	if _, err := Open([]string{"file:" + filepath.Join(dir, "missing")}, Options{}); err == nil {
		t.Fatal("missing file accepted")
	}
	if _, err := Open([]string{"file:" + dir}, Options{}); err == nil {
		t.Fatal("directory accepted")
	}
}

func TestOpenDefault(t *testing.T) {
	set, err := Open(nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Bdevs) < 2 {
		t.Fatalf("demo subsystem has %d bdevs", len(set.Bdevs))
	}
	if err := set.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestDemoData(t *testing.T) {
	set, err := Open([]string{"mock"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	for i, b := range set.Bdevs {
		c, ns := bdev.NVMeNamespace(b)
		want := demo.Data(i, b.BlockSize(), b.NumBlocks())
		qp, err := c.NewQueuePair(128)
		if err != nil {
			t.Fatal(err)
		}
		buf, _ := c.Transport().AllocDMA(len(want))
		done := false
		var rerr error
		if err := qp.Read(ns, 0, uint32(b.NumBlocks()), buf, 0, completerFunc(func(err error) { rerr, done = err, true }), 0); err != nil {
			t.Fatal(err)
		}
		for !done {
			qp.Process(0)
		}
		if rerr != nil {
			t.Fatal(rerr)
		}
		got := buf.Buf[:len(want)]
		if !bytes.Equal(got, want) {
			t.Fatalf("%s does not hold its demo data", b.Name())
		}
		blocks := 0
		for off := 0; off < len(got); off += b.BlockSize() {
			blk := got[off : off+b.BlockSize()]
			if bytes.Contains(blk, []byte(demo.Pattern)) {
				blocks++
			}
			if !bytes.HasPrefix(blk, []byte("2026-11-25T")) {
				t.Fatalf("%s block %d does not start with a log line: %q", b.Name(), off/b.BlockSize(), blk[:40])
			}
		}
		if blocks == 0 || blocks == len(got)/b.BlockSize() {
			t.Fatalf("%s: %d of %d blocks hold an ERROR line", b.Name(), blocks, len(got)/b.BlockSize())
		}
		qp.Close()
		c.Transport().FreeDMA(buf)
	}
}

// reader is a job like a scan's: reads in flight, each callback reads on
// through the job's channel, which the job forgets when it stops.
type reader struct {
	ch      *bdev.Channel
	bufs    []bdev.Buffer
	next    uint64
	blocks  uint64
	issued  int
	done    int
	refused int
}

func (j *reader) issue(b *bdev.Buffer) {
	if j.next >= j.blocks {
		return
	}
	if err := j.ch.Read(b, j.next, 8, j.onRead, b); err != nil {
		j.refused++
		return
	}
	j.next += 8
	j.issued++
}

func (j *reader) onRead(io *bdev.IO) {
	j.done++
	j.issue(io.Arg.(*bdev.Buffer))
}

func startReactor(t *testing.T) (*poller.Group, *poller.Reactor) {
	t.Helper()
	g, err := poller.Start(poller.Config{NoPin: true, Idle: poller.IdleStrategy{Spin: 1, Yield: 1, Park: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	return g, g.Reactors()[0]
}

// TestCloseAfterFailedStart stops jobs with reads in flight the way a scan
// whose start failed does — close each channel, forget it — and then
// closes the device set. Closing a channel completes its reads (a callback
// that reads on is refused), so that closing the set later runs no
// callback of a forgotten channel.
func TestCloseAfterFailedStart(t *testing.T) {
	dir := t.TempDir()
	var addrs []string
	for _, n := range []string{"a", "b"} {
		p := filepath.Join(dir, n)
		os.WriteFile(p, bytes.Repeat([]byte(n), 256<<10), 0o644)
		addrs = append(addrs, "file:"+p)
	}
	set, err := Open(addrs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	g, r := startReactor(t)
	var jobs []*reader
	var descs []*bdev.Desc
	for _, b := range set.Bdevs {
		d, err := bdev.Open(b, false)
		if err != nil {
			t.Fatal(err)
		}
		descs = append(descs, d)
		j := &reader{blocks: b.NumBlocks()}
		for i := 0; i < 4; i++ {
			buf, err := d.AllocBuffer(4096)
			if err != nil {
				t.Fatal(err)
			}
			j.bufs = append(j.bufs, buf)
		}
		jobs = append(jobs, j)
	}
	var closeErrs []error
	var done []int
	err = r.Call(func() error {
		for i, j := range jobs {
			var err error
			if j.ch, err = descs[i].NewChannelOn(r, len(j.bufs)); err != nil {
				return err
			}
			for k := range j.bufs {
				j.issue(&j.bufs[k])
			}
		}
		// The start failed here: stop every job.
		for _, j := range jobs {
			closeErrs = append(closeErrs, j.ch.Close())
			j.ch = nil
		}
		for _, j := range jobs {
			done = append(done, j.done)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, j := range jobs {
		if closeErrs[i] != nil {
			t.Errorf("job %d: Close: %v", i, closeErrs[i])
		}
		// Closing the first channel reaps the queue pair both share: the
		// second job's reads complete and read on too.
		if j.issued < 4 || j.done != j.issued || j.refused != 4 {
			t.Errorf("job %d: %d reads issued, %d completed, %d refused after Close; want all completed, 4 refused", i, j.issued, j.done, j.refused)
		}
	}
	if err := g.Stop(); err != nil {
		t.Fatal(err)
	}
	for i, d := range descs {
		for _, b := range jobs[i].bufs {
			d.FreeBuffer(b)
		}
		d.Close()
	}
	if err := set.Close(); err != nil {
		t.Fatal(err)
	}
	for i, j := range jobs {
		if j.done != done[i] {
			t.Errorf("job %d: %d callbacks after its channel closed, want none", i, j.done-done[i])
		}
	}
}

// TestCloseWithOpenChannel closes a set while a channel of one of its
// bdevs is open: the controller stays open, and the error says why; once
// the channel is closed the set closes.
func TestCloseWithOpenChannel(t *testing.T) {
	set, err := Open([]string{"mock:null"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	g, r := startReactor(t)
	defer g.Stop()
	d, err := bdev.Open(set.Bdevs[0], false)
	if err != nil {
		t.Fatal(err)
	}
	buf, _ := d.AllocBuffer(4096)
	var ch *bdev.Channel
	if err := r.Call(func() (err error) { ch, err = d.NewChannelOn(r, 4); return err }); err != nil {
		t.Fatal(err)
	}
	err = set.Close()
	if err == nil || !strings.Contains(err.Error(), set.Controllers[0].Name()) || !strings.Contains(err.Error(), "queue pairs") {
		t.Fatalf("closing a set under an open channel: %v", err)
	}
	done := 0
	err = r.Call(func() error {
		if err := ch.Read(&buf, 0, 8, func(io *bdev.IO) { done++ }, nil); err != nil {
			return err
		}
		for done == 0 {
			ch.Poll()
		}
		return ch.Close()
	})
	if err != nil {
		t.Fatalf("I/O on the channel the set kept open: %v", err)
	}
	if !errors.Is(d.FreeBuffer(buf), nil) {
		t.Error("free buffer")
	}
	d.Close()
	if err := set.Close(); err != nil {
		t.Fatal(err)
	}
	if len(set.Controllers) != 0 || len(set.Bdevs) != 0 {
		t.Fatalf("closed set keeps %d controllers, %d bdevs", len(set.Controllers), len(set.Bdevs))
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"mock", "mock:null", "file:/x,lba=4096", "pci:0000:01:00.0", "pci:zz", "file:,lba=1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := Parse(s)
		if err != nil {
			return
		}
		switch spec.Kind {
		case File:
			if spec.Path == "" || (spec.LBASize != 512 && spec.LBASize != 4096) {
				t.Fatalf("%q parsed to %+v", s, spec)
			}
		case PCI:
			if _, err := Parse("pci:" + spec.Addr); err != nil {
				t.Fatalf("%q: canonical address %q does not parse: %v", s, spec.Addr, err)
			}
		}
	})
}

// TestOpenRefusesDuplicates: one device named twice, by the same address or
// by two addresses of one file, is refused before anything opens.
func TestOpenRefusesDuplicates(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.img")
	if err := os.WriteFile(a, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.img")
	if err := os.Symlink(a, link); err != nil {
		t.Fatal(err)
	}
	for _, addrs := range [][]string{
		{"mock", "mock"},
		{"mock:null", "mock", "mock:null"},
		{"file:" + a, "file:" + a + ",lba=4096"},
		{"file:" + a, "file:" + dir + "/./sub/../a.img"},
		{"file:" + a, "file:" + link},
		{"pci:0000:01:00.0", "pci:01:00.0"},
		{"file:" + a, "uring:" + link},
		{"uring:" + a, "uring:" + a + ",sqpoll"},
	} {
		set, err := Open(addrs, Options{})
		if !errors.Is(err, ErrDuplicate) {
			if set != nil {
				set.Close()
			}
			t.Errorf("Open(%q) = %v; want ErrDuplicate", addrs, err)
		}
	}
	set, err := Open([]string{"mock", "mock:null", "file:" + a}, Options{})
	if err != nil {
		t.Fatalf("distinct devices refused: %v", err)
	}
	set.Close()
}

// TestOpenUring opens a file through io_uring next to the mock: its bdev
// reads what the file holds, and is named uring0.
func TestOpenUring(t *testing.T) {
	a := filepath.Join(t.TempDir(), "a.img")
	want := bytes.Repeat([]byte("uring!!!"), 1<<14)
	if err := os.WriteFile(a, want, 0o644); err != nil {
		t.Fatal(err)
	}
	set, err := Open([]string{"mock:null", "uring:" + a}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	var b *bdev.Bdev
	for _, x := range set.Bdevs {
		if x.Name() == "uring0" {
			b = x
		}
	}
	if b == nil || b.NumBlocks() != uint64(len(want)/512) {
		t.Fatalf("no uring0 bdev of %d blocks in %d bdevs", len(want)/512, len(set.Bdevs))
	}
	got := readAll(t, b)
	if !bytes.Equal(got, want) {
		t.Fatal("uring0 does not read what the file holds")
	}
}

// readAll reads a whole bdev through a Sync on a reactor of its own.
func readAll(t *testing.T, b *bdev.Bdev) []byte {
	t.Helper()
	g, err := poller.Start(poller.Config{Cores: "0", NoPin: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	d, err := bdev.Open(b, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	s, err := bdev.NewSync(d, g.Reactors()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out := make([]byte, b.NumBlocks()*uint64(b.BlockSize()))
	if _, err := s.ReadAt(context.Background(), out, 0); err != nil {
		t.Fatal(err)
	}
	return out
}

type completerFunc func(err error)

func (f completerFunc) Complete(_ uint64, _ uint64, err error) { f(err) }

// TestUnknownAddressListsSchemes: the error for an address no driver
// matches names every registered scheme.
func TestUnknownAddressListsSchemes(t *testing.T) {
	_, err := Parse("nvme0n1")
	if err == nil {
		t.Fatal("nvme0n1 accepted")
	}
	for _, u := range []string{"mock", "mock:null", "file:PATH[,lba=512|4096]", "pci:DDDD:BB:DD.F", "uring:PATH", "tcp://HOST:PORT[/NQN]", "csd[:N]"} {
		if !strings.Contains(err.Error(), u) {
			t.Errorf("error %q does not list %s", err, u)
		}
	}
}

// TestRegisterRefusesDuplicates: a second driver for a registered scheme is
// a programming error.
func TestRegisterRefusesDuplicates(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("second mock driver registered")
		}
	}()
	Register(Driver{Kind: Mock, Usage: "mock", Match: func(string) bool { return false },
		Parse: func(string) (Spec, error) { return Spec{}, nil }, Open: func(*Opening, Spec) error { return nil }})
}
