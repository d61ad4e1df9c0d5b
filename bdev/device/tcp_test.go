package device

import (
	"strings"
	"testing"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/nvmf"
	"github.com/bpfblk/bpfblk/poller"
)

func TestParseTCP(t *testing.T) {
	s, err := Parse("tcp://127.0.0.1:4420/nqn.2024-01.io.bpfblk:x")
	if err != nil || s.Kind != TCP || s.Addr != "127.0.0.1:4420" || s.NQN != "nqn.2024-01.io.bpfblk:x" {
		t.Fatalf("Parse = %+v, %v", s, err)
	}
	if s, err := Parse("tcp://[::1]:4420"); err != nil || s.Addr != "[::1]:4420" || s.NQN != "" {
		t.Fatalf("Parse IPv6 = %+v, %v", s, err)
	}
	for _, bad := range []string{"tcp://", "tcp://host", "tcp://:4420", "tcp://h:0", "tcp://h:99999", "tcp://h:1/a b"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

// TestOpenTCP opens a served malloc bdev by NQN and by discovery.
func TestOpenTCP(t *testing.T) {
	g, err := poller.Start(poller.Config{NoPin: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	m, err := bdev.NewMalloc("m", 512, 2048)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	srv, err := nvmf.Listen("127.0.0.1:0", nvmf.Config{Bdevs: []*bdev.Bdev{m}, Reactors: g.Reactors()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for _, addr := range []string{"tcp://" + srv.Addr().String() + "/" + srv.NQN(), "tcp://" + srv.Addr().String()} {
		set, err := Open([]string{addr}, Options{})
		if err != nil {
			t.Fatalf("Open(%s): %+v", addr, err)
		}
		if len(set.Controllers) != 1 || len(set.Bdevs) != 1 || set.Bdevs[0].NumBlocks() != 2048 || set.Bdevs[0].BlockSize() != 512 {
			t.Errorf("Open(%s): %d controllers, %d bdevs", addr, len(set.Controllers), len(set.Bdevs))
		}
		if !strings.Contains(set.Controllers[0].Name(), srv.NQN()) {
			t.Errorf("controller name %q does not name the subsystem", set.Controllers[0].Name())
		}
		if err := set.Close(); err != nil {
			t.Errorf("Close: %+v", err)
		}
	}
}
