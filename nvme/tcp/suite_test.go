package tcp

import (
	"testing"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/nvmetest"
)

func TestDriverSuite(t *testing.T) {
	for _, dg := range []bool{false, true} {
		name := "plain"
		if dg {
			name = "digests"
		}
		t.Run(name, func(t *testing.T) {
			tg, addr := startTarget(t, 2)
			cfg := nvmetest.SuiteConfig{IntegrityOps: 4000}
			if testing.Short() || dg {
				cfg.IntegrityOps = 1000
			}
			nvmetest.RunDriverSuiteWith(t, func(t *testing.T) []nvme.Transport {
				tr, err := Dial(addr, tg.NQN(), Options{HeaderDigest: dg, DataDigest: dg})
				if err != nil {
					t.Fatalf("Dial: %+v", err)
				}
				return []nvme.Transport{tr}
			}, cfg)
		})
	}
}
