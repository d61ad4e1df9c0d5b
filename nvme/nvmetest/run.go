package nvmetest

import (
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/nvme"
)

// drainTimeout bounds every wait for commands in the suite.
const drainTimeout = 30 * time.Second

type env struct {
	t     *testing.T
	ctrls []*nvme.Controller
}

// setup opens fresh transports and initialises a driver on each.
func setup(t *testing.T, open func(t *testing.T) []nvme.Transport, opts nvme.Options) *env {
	t.Helper()
	ts := open(t)
	if len(ts) == 0 {
		t.Fatal("open returned no transports")
	}
	e := &env{t: t}
	for _, tr := range ts {
		c, err := nvme.NewController(tr, opts)
		if err != nil {
			for _, tr := range ts {
				tr.Close()
			}
			t.Fatalf("NewController(%s): %+v", tr.Name(), err)
		}
		e.ctrls = append(e.ctrls, c)
		t.Cleanup(func() {
			if err := c.Close(); err != nil {
				t.Errorf("Close(%s): %v", c.Name(), err)
			}
		})
	}
	return e
}

// nvmNamespaces returns every NVM namespace of every controller.
func (e *env) nvmNamespaces() []nsRef {
	var out []nsRef
	for _, c := range e.ctrls {
		for _, ns := range c.Namespaces() {
			if ns.CSI == nvme.CSINVM && ns.BlockSize != 0 {
				out = append(out, nsRef{c, ns})
			}
		}
	}
	if len(out) == 0 {
		e.t.Fatal("no NVM namespace on any controller")
	}
	return out
}

type nsRef struct {
	c  *nvme.Controller
	ns *nvme.Namespace
}

// recorder counts completions per tag and keeps the last error and result.
type recorder struct {
	count  map[uint64]int
	err    map[uint64]error
	result map[uint64]uint64
}

func newRecorder() *recorder {
	return &recorder{count: map[uint64]int{}, err: map[uint64]error{}, result: map[uint64]uint64{}}
}

// Complete implements nvme.Completer.
func (r *recorder) Complete(tag, result uint64, err error) {
	r.count[tag]++
	r.err[tag] = err
	r.result[tag] = result
}

// do submits one command through submit, drains the queue and returns the
// command's completion error.
func do(t *testing.T, qp *nvme.QueuePair, submit func(cb nvme.Completer) error) error {
	t.Helper()
	r := newRecorder()
	if err := submit(r); err != nil {
		t.Fatalf("submit: %+v", err)
	}
	if err := qp.Drain(drainTimeout); err != nil {
		t.Fatalf("drain: %v", err)
	}
	if r.count[0] != 1 {
		t.Fatalf("command completed %d times, want once", r.count[0])
	}
	return r.err[0]
}

func newQP(t *testing.T, c *nvme.Controller, depth int) *nvme.QueuePair {
	t.Helper()
	qp, err := c.NewQueuePair(depth)
	if err != nil {
		t.Fatalf("NewQueuePair(%d) on %s: %+v", depth, c.Name(), err)
	}
	t.Cleanup(func() { qp.Close() })
	return qp
}

func allocDMA(t *testing.T, c *nvme.Controller, n int) *nvme.DMA {
	t.Helper()
	d, err := c.Transport().AllocDMA(n)
	if err != nil {
		t.Fatalf("AllocDMA(%d) on %s: %+v", n, c.Name(), err)
	}
	t.Cleanup(func() { c.Transport().FreeDMA(d) })
	return d
}

func runSuite(t *testing.T, open func(t *testing.T) []nvme.Transport, cfg SuiteConfig) {
	t.Run("InitIdentify", func(t *testing.T) { testInitIdentify(t, open) })
	t.Run("Commands", func(t *testing.T) { testCommands(t, open) })
	t.Run("Errors", func(t *testing.T) { testErrors(t, open, cfg.NoLBARangeCheck) })
	t.Run("PRP", func(t *testing.T) { testPRP(t, open) })
	t.Run("QueueFull", func(t *testing.T) { testQueueFull(t, open) })
	t.Run("Reset", func(t *testing.T) { testReset(t, open) })
	t.Run("Close", func(t *testing.T) { testClose(t, open) })
	t.Run("QueuePairs", func(t *testing.T) { testQueuePairs(t, open) })
	t.Run("CMB", func(t *testing.T) { testCMB(t, open) })
	t.Run("Integrity", func(t *testing.T) { testIntegrity(t, open, cfg.IntegrityOps) })
}
