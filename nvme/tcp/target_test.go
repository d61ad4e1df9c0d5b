package tcp

import (
	"testing"
)

func TestDiscover(t *testing.T) {
	tg, addr := startTarget(t, 1)
	es, err := Discover(addr, Options{})
	if err != nil {
		t.Fatalf("Discover: %+v", err)
	}
	if len(es) != 2 {
		t.Fatalf("%d entries, want 2: %+v", len(es), es)
	}
	e := es[0]
	if e.SubNQN != tg.NQN() || e.TrType != trtypeTCP || e.SubType != subtypeNVM || e.TrAddr+":"+e.TrSvcID != addr {
		t.Errorf("entry 0 = %+v, want the subsystem at %s", e, addr)
	}
	if es[1].SubNQN != DiscoveryNQN || es[1].SubType != subtypeDiscovery {
		t.Errorf("entry 1 = %+v, want the discovery subsystem", es[1])
	}
	// A discovery controller exports no namespaces and takes no I/O queues.
	if _, err := Dial(addr, "nqn.2024-01.io.bpfblk:nosuch", Options{}); err == nil {
		t.Error("Connect to an unknown NQN succeeded")
	}
}
