package device

import (
	"net"
	"strconv"
	"strings"

	"github.com/bpfblk/bpfblk/nvme/tcp"
	"github.com/pkg/errors"
)

const tcpScheme = "tcp://"

// tcp://HOST:PORT[/NQN]: a subsystem over NVMe/TCP, or every NVM subsystem
// the discovery controller lists.
func init() {
	Register(Driver{
		Kind: TCP, Usage: "tcp://HOST:PORT[/NQN]",
		Match: func(a string) bool { return strings.HasPrefix(a, tcpScheme) },
		Parse: parseTCP,
		Key:   func(s Spec) string { return tcpScheme + s.Addr + "/" + s.NQN },
		Open:  func(o *Opening, s Spec) error { return o.Set.addTCP(s, o.opts) },
	})
}

// parseTCP parses tcp://HOST:PORT[/NQN].
func parseTCP(s string) (Spec, error) {
	rest := strings.TrimPrefix(s, tcpScheme)
	hostport, nqn, _ := strings.Cut(rest, "/")
	host, port, err := net.SplitHostPort(hostport)
	if err != nil || host == "" {
		return Spec{}, errors.Errorf("device %q: want tcp://HOST:PORT[/NQN]", s)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return Spec{}, errors.Errorf("device %q: port %q: want 1 to 65535", s, port)
	}
	if len(nqn) > 223 || strings.ContainsAny(nqn, " /") {
		return Spec{}, errors.Errorf("device %q: NQN %q: at most 223 bytes, no spaces or slashes", s, nqn)
	}
	return Spec{Kind: TCP, Addr: net.JoinHostPort(host, port), NQN: nqn}, nil
}

// addTCP connects to the subsystem of s, or to every NVM subsystem its
// discovery controller lists when s names none.
func (set *Set) addTCP(s Spec, opts Options) error {
	if s.NQN != "" {
		t, err := tcp.Dial(s.Addr, s.NQN, tcp.Options{})
		if err != nil {
			return errors.Wrapf(err, "device tcp://%s/%s", s.Addr, s.NQN)
		}
		return set.addController(t, opts)
	}
	entries, err := tcp.Discover(s.Addr, tcp.Options{})
	if err != nil {
		return errors.Wrapf(err, "device tcp://%s: discovery", s.Addr)
	}
	n := 0
	for _, e := range entries {
		if e.SubType != 2 || e.TrType != 3 {
			continue // referrals and discovery subsystems; non-TCP transports
		}
		addr := net.JoinHostPort(e.TrAddr, e.TrSvcID)
		t, err := tcp.Dial(addr, e.SubNQN, tcp.Options{})
		if err != nil {
			return errors.Wrapf(err, "device tcp://%s: discovered subsystem %s at %s", s.Addr, e.SubNQN, addr)
		}
		if err := set.addController(t, opts); err != nil {
			return err
		}
		n++
	}
	if n == 0 {
		return errors.Errorf("device tcp://%s: the discovery log lists no NVM subsystem over TCP", s.Addr)
	}
	return nil
}
