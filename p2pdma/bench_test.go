package p2pdma

import (
	"context"
	"testing"

	"github.com/bpfblk/bpfblk/nvme/mock"
)

// BenchmarkCopy copies the same 8 MiB between namespaces of two emulated
// controllers peer-to-peer through a CMB and bounced through host memory,
// and within one namespace with NVM Copy. host-B/op and peer-B/op are the
// payload bytes the bus moved to and from host memory and peer memory per
// copy. Run: go test -run - -bench Copy -benchmem ./p2pdma
func BenchmarkCopy(b *testing.B) {
	const size = 8 << 20
	const blocks = size / 512
	for _, mode := range []mock.Mode{mock.Inline, mock.DeviceCore} {
		r := standardRig(b, mode)
		src, dst := r.bdevs["mockAn1"], r.bdevs["mockBn1"]
		fillBlocks(b, src, 0, blocks, 5)
		m := map[mock.Mode]string{mock.Inline: "inline", mock.DeviceCore: "device-core"}[mode]
		for _, c := range []struct {
			name string
			via  Via
		}{{"p2p-cmb", ViaCMB}, {"host-bounce", ViaHost}, {"nvm-copy", ViaCopy}} {
			b.Run(m+"/"+c.name, func(b *testing.B) {
				d := dst
				if c.via == ViaCopy {
					d = src // NVM Copy works within one namespace
				}
				b.SetBytes(size)
				before := r.bus.Stats()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, err := Copy(context.Background(), d, blocks, src, 0, blocks, CopyOptions{Via: c.via}); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				dl := busDelta(before, r.bus.Stats())
				b.ReportMetric(float64(dl.HostRead+dl.HostWrite)/float64(b.N), "host-B/op")
				b.ReportMetric(float64(dl.PeerRead+dl.PeerWrite)/float64(b.N), "peer-B/op")
			})
		}
	}
}
