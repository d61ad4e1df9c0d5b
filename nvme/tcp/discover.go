package tcp

import (
	"time"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/pkg/errors"
)

// Discover connects to the discovery controller at addr (HOST:PORT), enables
// it, reads its discovery log page and disconnects.
func Discover(addr string, opts Options) ([]DiscoveryEntry, error) {
	if opts.KeepAlive == 0 {
		opts.KeepAlive = -1 // a short-lived discovery connection, as Linux makes it
	}
	t, err := Dial(addr, DiscoveryNQN, opts)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	t.amu.Lock()
	defer t.amu.Unlock()
	if err := t.propertySet(nvme.RegCC, nvme.CCEnable, false); err != nil {
		return nil, errors.Wrapf(err, "%s: enable", t.name)
	}
	deadline := time.Now().Add(t.opts.Timeout)
	for {
		csts, err := t.propertyGet(nvme.RegCSTS, false)
		if err != nil {
			return nil, err
		}
		if csts&nvme.CSTSReady != 0 {
			break
		}
		if csts&nvme.CSTSFatal != 0 || time.Now().After(deadline) {
			return nil, errors.Errorf("%s: discovery controller not ready (CSTS %#x)", t.name, csts)
		}
		time.Sleep(time.Millisecond)
	}
	hdr, err := t.discoveryLog(discHeaderSize)
	if err != nil {
		return nil, err
	}
	n := le.Uint64(hdr[8:])
	if n > discoveryMaxEntries {
		n = discoveryMaxEntries
	}
	if n == 0 {
		return nil, nil
	}
	page, err := t.discoveryLog(discHeaderSize + int(n)*discEntrySize)
	if err != nil {
		return nil, err
	}
	out := make([]DiscoveryEntry, 0, n)
	for i := 0; i < int(n); i++ {
		out = append(out, parseDiscoveryEntry(page[discHeaderSize+i*discEntrySize:]))
	}
	return out, nil
}

// discoveryLog reads the first n bytes of the discovery log page.
func (t *Transport) discoveryLog(n int) ([]byte, error) {
	data := make([]byte, n)
	var s [64]byte
	s[0] = adminGetLogPage
	numd := uint32(n/4 - 1)
	le.PutUint32(s[40:], logDiscovery|numd<<16)
	le.PutUint32(s[44:], numd>>16)
	cqe, err := t.admin.internal(&s, data, false)
	if err != nil {
		t.adminFailed(err)
		return nil, errors.Wrapf(err, "%s: discovery log", t.name)
	}
	if st := le.Uint16(cqe[14:]); st>>1 != 0 {
		return nil, errors.Wrapf(nvme.StatusFromField(st), "%s: discovery log", t.name)
	}
	return data, nil
}
