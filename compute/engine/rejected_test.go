package engine_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/compute/verifier"
)

// TestRejectionSource: a rejected C filter (testdata/rejected.c, built once
// and committed) names the C source line of the failing instruction; with
// VerifierLog the error carries the path to it with register states.
func TestRejectionSource(t *testing.T) {
	for _, tc := range []struct {
		prog, source string
		line         int
		log          []string
	}{
		{"unchecked_read", "return data[n] == 'E';", 29, []string{
			"; if (n > 64) @ ./rejected.c:28\n",
			"; return data[n] == 'E'; @ ./rejected.c:29\n",
			"R2=pkt(var=(umin=65,umax=4294967295),r=0)",
			"10: LdXMemB dst: r1 src: r2 off: 0 imm: 0\n10: data access [0, 1) is not proven inside [data, data_end)",
		}},
		{"null_value", "*v += 1;", 40, []string{
			"R1=map_ptr(map=counts) R2=fp-4",
			"R0=map_value_or_null(map=counts)",
			"8: LdXMemDW dst: r1 src: r0 off: 0 imm: 0\n8: possible NULL dereference",
		}},
	} {
		t.Run(tc.prog, func(t *testing.T) {
			for _, withLog := range []bool{false, true} {
				_, err := engine.LoadFile("testdata/rejected.o", &engine.LoadOptions{Program: tc.prog, VerifierLog: withLog})
				var ve *verifier.Error
				if !errors.As(err, &ve) {
					t.Fatalf("want a rejection, got %v", err)
				}
				if ve.Source != tc.source || ve.Line != tc.line || ve.File != "./rejected.c" {
					t.Fatalf("source %s:%d %q, want line %d %q", ve.File, ve.Line, ve.Source, tc.line, tc.source)
				}
				if want := "(source: " + tc.source + ")"; !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "./rejected.c:") || strings.Contains(err.Error(), "\n") {
					t.Fatalf("message %q lacks %q or is not one line", err, want)
				}
				if !withLog {
					if ve.Log != "" {
						t.Fatalf("log without VerifierLog:\n%s", ve.Log)
					}
					continue
				}
				for _, w := range tc.log {
					if !strings.Contains(ve.Log, w) {
						t.Errorf("log lacks %q:\n%s", w, ve.Log)
					}
				}
			}
		})
	}
}
