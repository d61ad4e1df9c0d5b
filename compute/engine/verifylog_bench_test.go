package engine_test

import (
	"testing"

	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/filters"
)

// BenchmarkLoadVerifierLog loads (and so verifies) pattern_filter, whose
// 4096-iteration loop the verifier walks iteration by iteration, without and with
// the verifier's log: off must cost what verification cost before the log
// existed; on records every step's registers.
func BenchmarkLoadVerifierLog(b *testing.B) {
	cs, err := filters.LoadPattern()
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		log  bool
	}{{"off", false}, {"on", true}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := engine.LoadSpec(cs, &engine.LoadOptions{Program: "pattern_filter", VerifierLog: bc.log}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
