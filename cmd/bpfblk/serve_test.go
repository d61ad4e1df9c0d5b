package main

import (
	"bytes"
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

// TestServeAndConnect runs bpfblk serve on a free port and lists, perfs
// and identifies what it serves through tcp:// devices.
func TestServeAndConnect(t *testing.T) {
	stop := make(chan os.Signal, 1)
	old := serveSignals
	serveSignals = func() (<-chan os.Signal, func()) { return stop, func() {} }
	defer func() { serveSignals = old }()
	var out, errOut lockedBuffer
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"serve", "--listen", "127.0.0.1:0", "--dev", "mock:null", "--no-pin"}, &out, &errOut)
	}()
	re := regexp.MustCompile(`serving (\S+) on (\S+):`)
	var m []string
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
	nqn, addr := m[1], m[2]
	code, lo, le := runCLI("list", "--dev", "tcp://"+addr)
	if code != exitOK || !strings.Contains(lo, nqn) || !strings.Contains(lo, "NVM") {
		t.Errorf("list by discovery: exit %d\n%s%s", code, lo, le)
	}
	code, po, pe := runCLI("perf", "--dev", "tcp://"+addr+"/"+nqn, "-t", "0.3", "-q", "8", "--json", "--no-pin")
	if code != exitOK || !strings.Contains(po, `"iops"`) {
		t.Errorf("perf over tcp: exit %d\n%s%s", code, po, pe)
	}
	stop <- os.Interrupt
	if code := <-done; code != exitOK {
		t.Errorf("serve exit %d: %s", code, errOut.String())
	}
	for _, args := range [][]string{{"serve"}, {"serve", "--listen", "nope"}, {"serve", "--listen", "127.0.0.1:1", "--nqn", "a b"}} {
		code, o, e := runCLI(args...)
		checkUsageError(t, "serve", args, code, o, e)
	}
}
