// Package demo generates the data of the embedded demo subsystem (device
// address mock): web and database server logs, a pure function of the
// namespace's index, so that tests and users can recompute any block.
package demo

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/pkg/errors"
)

// The embedded demo subsystem holds web and database server logs: every
// block is whole text lines ("2026-11-25T03:14:07.123Z web03 nginx[812]: INFO
// GET /api/v1/items 200 12ms"), padded with spaces to the block's end, so a
// line never straddles two blocks. About one line in five hundred is an ERROR.
// The data is a pure function of the namespace's index, so tests
// and users can recompute any block with Data.

// Pattern is what the built-in demo filter looks for.
const Pattern = "ERROR"

var (
	demoHosts    = []string{"web01", "web02", "web03", "web04", "db01", "db02", "cache01", "batch01"}
	demoServices = []struct {
		name string
		msgs map[string][]string
	}{
		{"nginx", map[string][]string{
			"INFO":  {"GET /api/v1/items 200 %dms", "POST /api/v1/orders 201 %dms", "GET /healthz 200 %dms", "GET /static/app.js 304 %dms"},
			"WARN":  {"upstream response slow: %dms", "client closed connection after %dms"},
			"ERROR": {"upstream timed out after %dms while reading response header", "connect() to 10.0.3.7:8080 failed (111: Connection refused) after %dms"},
		}},
		{"postgres", map[string][]string{
			"INFO":  {"checkpoint complete: wrote %d buffers", "autovacuum of table \"orders\" done in %dms"},
			"WARN":  {"checkpoints are occurring too frequently (%d seconds apart)"},
			"ERROR": {"deadlock detected; process %d waits for ShareLock", "could not extend file \"base/16384/%d\": No space left on device"},
		}},
		{"sshd", map[string][]string{
			"INFO":  {"Accepted publickey for deploy from 10.0.%d.4", "session closed for user backup after %ds"},
			"WARN":  {"Failed password for invalid user admin from 203.0.113.%d"},
			"ERROR": {"fatal: Timeout before authentication for 198.51.100.%d"},
		}},
		{"kernel", map[string][]string{
			"INFO":  {"nvme nvme0: %d/0/0 default/read/poll queues", "EXT4-fs (nvme0n1p%d): mounted filesystem"},
			"WARN":  {"CPU%d: Core temperature above threshold, cpu clock throttled"},
			"ERROR": {"nvme nvme1: I/O %d QID 3 timeout, aborting", "Memory failure: %#x: recovery action for dirty LRU page: Recovered"},
		}},
	}
	demoEpoch = time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
)

// demoGen produces the demo lines of one namespace, block after block.
type demoGen struct {
	rng   *rand.Rand
	now   time.Time
	line  []byte
	sec   int64  // the second stamp holds
	stamp []byte // "2006-01-02T15:04:05" of sec
}

func newDemoGen(nsIndex int) *demoGen {
	return &demoGen{rng: rand.New(rand.NewPCG(uint64(nsIndex)+1, 0xb9f0)), now: demoEpoch.Add(time.Duration(nsIndex) * time.Hour), sec: -1}
}

// template is a message with one integer verb (%d or %#x) cut out, so lines
// are built by appending instead of formatting: a demo subsystem is about a
// million lines.
type template struct {
	before, after string
	hex           bool
}

var demoTemplates = func() map[string]map[string][]template {
	out := map[string]map[string][]template{}
	for _, svc := range demoServices {
		out[svc.name] = map[string][]template{}
		for level, msgs := range svc.msgs {
			for _, m := range msgs {
				i := strings.IndexByte(m, '%')
				verb := "%d"
				if strings.HasPrefix(m[i:], "%#x") {
					verb = "%#x"
				}
				out[svc.name][level] = append(out[svc.name][level], template{before: m[:i], after: m[i+len(verb):], hex: verb == "%#x"})
			}
		}
	}
	return out
}()

func (g *demoGen) nextLine() []byte {
	r := g.rng
	g.now = g.now.Add(time.Duration(r.IntN(40)) * time.Millisecond)
	level := "INFO"
	switch p := r.IntN(1000); {
	case p < 2:
		level = "ERROR"
	case p < 60:
		level = "WARN"
	}
	svc := demoServices[r.IntN(len(demoServices))]
	tmpls := demoTemplates[svc.name][level]
	t := tmpls[r.IntN(len(tmpls))]
	arg := int64(1 + r.IntN(4000))
	host := demoHosts[r.IntN(len(demoHosts))]
	pid := int64(100 + r.IntN(9000))

	if sec := g.now.Unix(); sec != g.sec {
		g.sec, g.stamp = sec, g.now.AppendFormat(g.stamp[:0], "2006-01-02T15:04:05")
	}
	ms := g.now.Nanosecond() / int(time.Millisecond)
	b := append(g.line[:0], g.stamp...)
	b = append(b, '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10), 'Z', ' ')
	b = append(b, host...)
	b = append(b, ' ')
	b = append(b, svc.name...)
	b = append(b, '[')
	b = strconv.AppendInt(b, pid, 10)
	b = append(b, "]: "...)
	b = append(b, level...)
	b = append(b, ' ')
	b = append(b, t.before...)
	if t.hex {
		b = append(b, "0x"...)
		b = strconv.AppendInt(b, arg, 16)
	} else {
		b = strconv.AppendInt(b, arg, 10)
	}
	b = append(b, t.after...)
	b = append(b, '\n')
	g.line = b
	return b
}

// fill writes the next block into b: whole lines, then spaces.
func (g *demoGen) fill(b []byte, pending *[]byte) {
	n := 0
	for {
		if len(*pending) == 0 {
			*pending = append((*pending)[:0], g.nextLine()...)
		}
		if n+len(*pending) > len(b) {
			break
		}
		n += copy(b[n:], *pending)
		*pending = (*pending)[:0]
	}
	for i := n; i < len(b); i++ {
		b[i] = ' '
	}
	if n == 0 {
		// A line longer than a block: cut it (never happens with the
		// demo's 512- and 4096-byte blocks).
		copy(b, *pending)
		*pending = (*pending)[:0]
	}
}

// Data returns the content of the nsIndex-th demo namespace (counting over
// the whole subsystem from 0) with the given geometry.
func Data(nsIndex int, blockSize int, blocks uint64) []byte {
	g := newDemoGen(nsIndex)
	var pending []byte
	out := make([]byte, uint64(blockSize)*blocks)
	for off := 0; off < len(out); off += blockSize {
		g.fill(out[off:off+blockSize], &pending)
	}
	return out
}

// Write fills every NVM namespace of c with its demo data through a queue
// pair; first is the subsystem-wide index of c's first namespace. It returns
// the index after c's last namespace.
func Write(c *nvme.Controller, first int) (int, error) {
	qp, err := c.NewQueuePair(8)
	if err != nil {
		return 0, err
	}
	defer qp.Close()
	const chunk = 256 << 10
	buf, err := c.Transport().AllocDMA(chunk)
	if err != nil {
		return 0, err
	}
	defer c.Transport().FreeDMA(buf)
	idx := first
	for _, ns := range c.Namespaces() {
		if ns.CSI != nvme.CSINVM {
			continue
		}
		bs := int(ns.BlockSize)
		g := newDemoGen(idx)
		idx++
		var pending []byte
		per := uint64(chunk / bs)
		for lba := uint64(0); lba < ns.Blocks; lba += per {
			n := min(per, ns.Blocks-lba)
			for k := 0; k < int(n); k++ {
				g.fill(buf.Buf[k*bs:(k+1)*bs], &pending)
			}
			var werr error
			done := false
			cb := completerFunc(func(err error) { werr, done = err, true })
			if err := qp.Write(ns, lba, uint32(n), buf, 0, cb, 0); err != nil {
				return 0, errors.Wrapf(err, "demo data: namespace %d", ns.ID)
			}
			deadline := time.Now().Add(30 * time.Second)
			for !done {
				qp.Process(0)
				if time.Now().After(deadline) {
					return 0, errors.Errorf("demo data: namespace %d: write of LBA %d timed out", ns.ID, lba)
				}
			}
			if werr != nil {
				return 0, errors.Wrapf(werr, "demo data: namespace %d LBA %d", ns.ID, lba)
			}
		}
	}
	return idx, nil
}

type completerFunc func(err error)

func (f completerFunc) Complete(_ uint64, _ uint64, err error) { f(err) }
