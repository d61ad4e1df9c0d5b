package main

import (
	"strings"
	"testing"
)

const rejectedObj = "../../compute/engine/testdata/rejected.o"

// TestVerifierSourceAndLog: a rejection prints the C source line of the
// failing instruction with its index and reason on one line; --log (verify,
// run, scan) prints before it the path that failed with register states.
func TestVerifierSourceAndLog(t *testing.T) {
	const line = "./rejected.c:29: instruction 10 (LdXMemB dst: r1 src: r2 off: 0 imm: 0): data access [0, 1) is not proven inside [data, data_end)"
	const source = "(source: return data[n] == 'E';)"
	code, out, errOut := runCLI("prog", "verify", rejectedObj+":unchecked_read")
	if code != exitFail || out != "" || !strings.Contains(errOut, line) || !strings.Contains(errOut, source) || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	logLines := []string{
		"from entry to 0: R1=ctx() R10=fp0\n",
		"; if (n > 64) @ ./rejected.c:28\n",
		"8: JGTReg dst: r3 off: 1 src: r1\t; R1=scalar(umin=65,umax=4294967295) R2=pkt(r=8) R10=fp0\n",
		"10: data access [0, 1) is not proven",
	}
	for _, args := range [][]string{
		{"prog", "verify", rejectedObj + ":unchecked_read", "--log"},
		{"prog", "run", "--log", rejectedObj + ":unchecked_read"},
		{"scan", "--filter", rejectedObj + ":unchecked_read", "--log", "--dev", "mock:null"},
	} {
		code, out, errOut := runCLI(args...)
		if code != exitFail || out != "" {
			t.Fatalf("%v: exit %d, stdout %q", args, code, out)
		}
		for _, w := range logLines {
			if !strings.Contains(errOut, w) {
				t.Errorf("%v: stderr lacks %q:\n%s", args, w, errOut)
			}
		}
		// The log comes first; the last line is the one-line error.
		last := strings.TrimSpace(errOut[strings.LastIndex(strings.TrimSpace(errOut), "\n")+1:])
		if !strings.Contains(last, line) || !strings.Contains(last, source) {
			t.Errorf("%v: last line %q", args, last)
		}
	}
	code, _, errOut = runCLI("prog", "verify", "--log", rejectedObj+":null_value")
	if code != exitFail || !strings.Contains(errOut, "R0=map_value_or_null(map=counts)") || !strings.Contains(errOut, "(source: *v += 1;)") {
		t.Fatalf("exit %d, stderr %s", code, errOut)
	}
	// An accepted program prints no log.
	if code, out, errOut := runCLI("prog", "verify", "--log", "../../filters/aggregate_bpfel.o"); code != exitOK || errOut != "" || !strings.HasPrefix(out, "aggregate: ok") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}
