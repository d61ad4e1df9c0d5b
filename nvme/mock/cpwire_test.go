package mock

import (
	"testing"

	"github.com/bpfblk/bpfblk/nvme"
)

// TestCPWireRoundTrip checks the emulator's encoders against the driver's
// decoders: both sides must read the same offsets.
func TestCPWireRoundTrip(t *testing.T) {
	b := make([]byte, nvme.PageSize)
	ci := nvme.CPInfo{Slots: 3, MaxActive: 5, MaxRangeSets: 7, MaxRanges: 11, MaxProgram: 1 << 20, ProgTypes: 0x8001}
	putCPInfo(b, ci)
	if got, err := nvme.ParseCPInfo(b); err != nil || got != ci {
		t.Fatalf("CPInfo: put %+v, parsed %+v (%v)", ci, got, err)
	}
	clear(b)
	si := nvme.SLMInfo{Size: 0x123456789}
	putSLMInfo(b, si)
	if got, err := nvme.ParseSLMInfo(b); err != nil || got != si {
		t.Fatalf("SLMInfo: put %+v, parsed %+v (%v)", si, got, err)
	}
	clear(b)
	er := nvme.ExecResult{Count: 9, Flags: nvme.ExecOverflow, R0: 1<<63 | 5}
	putExecResult(b, er)
	if got := nvme.ParseExecResult(b); got != er {
		t.Fatalf("ExecResult: put %+v, parsed %+v", er, got)
	}
}
