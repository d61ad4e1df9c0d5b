package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a bytes.Buffer safe to read while a command writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startServe runs bpfblk serve with args on a free port of 127.0.0.1 until
// the test ends, and returns the NQN and address it serves and the line it
// printed.
func startServe(t *testing.T, args ...string) (nqn, addr, line string) {
	t.Helper()
	stop := make(chan os.Signal, 1)
	serveMu.Lock()
	old := serveSignals
	serveSignals = func() (<-chan os.Signal, func()) { return stop, func() {} }
	var out, errOut lockedBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(append([]string{"serve", "--listen", "127.0.0.1:0", "--no-pin"}, args...), &out, &errOut)
	}()
	re := regexp.MustCompile(`serving (\S+) on (\S+):.*`)
	var m []string
	defer func() { serveSignals = old; serveMu.Unlock() }()
	for deadline := time.Now().Add(30 * time.Second); m == nil; {
		select {
		case code := <-done:
			t.Fatalf("serve exited %d: %s", code, errOut.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve printed no address: %q %q", out.String(), errOut.String())
		}
		m = re.FindStringSubmatch(out.String())
		time.Sleep(10 * time.Millisecond)
	}
	t.Cleanup(func() {
		stop <- os.Interrupt
		if code := <-done; code != exitOK {
			t.Errorf("serve exit %d: %s", code, errOut.String())
		}
	})
	return m[1], m[2], m[0]
}

// serveMu keeps serves from swapping serveSignals at once.
var serveMu sync.Mutex

// TestServeAndConnect runs bpfblk serve on a free port and lists, perfs
// and identifies what it serves through tcp:// devices.
func TestServeAndConnect(t *testing.T) {
	nqn, addr, _ := startServe(t, "--dev", "mock:null")
	code, lo, le := runCLI("list", "--dev", "tcp://"+addr)
	if code != exitOK || !strings.Contains(lo, nqn) || !strings.Contains(lo, "NVM") {
		t.Errorf("list by discovery: exit %d\n%s%s", code, lo, le)
	}
	code, po, pe := runCLI("perf", "--dev", "tcp://"+addr+"/"+nqn, "-t", "0.3", "-q", "8", "--json", "--no-pin")
	if code != exitOK || !strings.Contains(po, `"iops"`) {
		t.Errorf("perf over tcp: exit %d\n%s%s", code, po, pe)
	}
	for _, args := range [][]string{{"serve"}, {"serve", "--listen", "nope"}, {"serve", "--listen", "127.0.0.1:1", "--nqn", "a b"}} {
		code, o, e := runCLI(args...)
		checkUsageError(t, "serve", args, code, o, e)
	}
}

// TestServeComputeDistributedScan serves the demo subsystem (which has a
// compute controller) and a null namespace (which has none) from two
// serves, and scans both over tcp://: the demo's namespaces run on the
// served compute namespace, so only matches cross the network; the null
// namespace is scanned by the host, which says why. The matches equal a
// local scan of the demo.
func TestServeComputeDistributedScan(t *testing.T) {
	nqnA, addrA, line := startServe(t, "--dev", "mock", "--nqn", "nqn.2026-01.io.bpfblk:a")
	if !strings.Contains(line, "4=compute(") || !strings.Contains(line, "5=memory(") {
		t.Fatalf("serve does not export the demo's compute namespace: %q", line)
	}
	nqnB, addrB, _ := startServe(t, "--dev", "mock:null", "--nqn", "nqn.2026-01.io.bpfblk:b")
	code, lo, le := runCLI("list", "--dev", "tcp://"+addrA+"/"+nqnA)
	if code != exitOK || !strings.Contains(lo, "CP") || !strings.Contains(lo, "SLM") {
		t.Fatalf("list: exit %d\n%s%s", code, lo, le)
	}
	devA, devB := "tcp://"+addrA+"/"+nqnA, "tcp://"+addrB+"/"+nqnB
	code, out, errOut := runCLI("scan", "--dev", devA, "--dev", devB, "--ns", devB+"n1:0-8191", "--ns", devA+"n1", "--ns", devA+"n2", "--ns", devA+"n3", "-c", "1", "--json")
	if code != exitOK {
		t.Fatalf("distributed scan: exit %d\n%s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var rep scanReport
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &rep); err != nil {
		t.Fatal(err)
	}
	code, local, errLocal := runCLI("scan", "--dev", "mock", "-c", "1", "--count")
	if code != exitOK {
		t.Fatalf("local scan: exit %d\n%s", code, errLocal)
	}
	if fmt.Sprint(rep.Matches) != strings.TrimSpace(local) || rep.Matches == 0 {
		t.Fatalf("distributed scan found %d matches, the local scan %s", rep.Matches, local)
	}
	for _, tg := range rep.Targets {
		switch {
		case strings.HasPrefix(tg.Name, devB):
			if tg.Engine != "host" || !strings.Contains(tg.Why, "no compute device reaches") {
				t.Errorf("%s (no compute namespace on its server) ran on %q (%q)", tg.Name, tg.Engine, tg.Why)
			}
		case tg.Engine != devA:
			t.Errorf("%s ran on %q, want its server's compute namespace", tg.Name, tg.Engine)
		}
	}
	hostRead := uint64(8192 * 512) // the null namespace's blocks, read by the host
	if rep.BytesOverNetwork < hostRead || rep.BytesOverNetwork-hostRead > (rep.BytesScanned-hostRead)/50 {
		t.Fatalf("%d bytes over the network for %d bytes scanned, %d of them by the host", rep.BytesOverNetwork, rep.BytesScanned, hostRead)
	}
	code, _, errOut = runCLI("scan", "--dev", devA, "-c", "1")
	if code != exitOK || !strings.Contains(errOut, "over the network") {
		t.Fatalf("scan summary without the network bytes: exit %d\n%s", code, errOut)
	}
}

// TestNSFlagsOfNetworkNames: --ns takes the range after the last colon of
// a tcp:// namespace name, whose host:port and NQN have colons of their own.
func TestNSFlagsOfNetworkNames(t *testing.T) {
	const name = "tcp://127.0.0.1:4420/nqn.2026-01.io.bpfblk:an1"
	for _, c := range []struct {
		flag        string
		first, last uint64
		whole, open bool
	}{
		{flag: name, whole: true},
		{flag: name + ":5-9", first: 5, last: 9},
		{flag: name + ":7-", first: 7, open: true},
	} {
		rs, err := parseNSFlags([]string{c.flag})
		if err != nil || len(rs) != 1 {
			t.Fatalf("--ns %s: %v", c.flag, err)
		}
		r := rs[0]
		if r.name != name || r.first != c.first || r.last != c.last || r.whole != c.whole || r.open != c.open {
			t.Errorf("--ns %s: %+v", c.flag, r)
		}
	}
	if _, err := parseNSFlags([]string{name + ":9-5"}); err == nil {
		t.Error("--ns with LAST < FIRST accepted")
	}
}
