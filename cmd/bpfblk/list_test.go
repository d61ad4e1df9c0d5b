package main

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestListAndIdentify(t *testing.T) {
	code, out, errOut := runCLI("list", "--json")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var ctrls []ctrlJSON
	if err := json.Unmarshal([]byte(out), &ctrls); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	compute, cmb, nvm := false, false, 0
	for _, c := range ctrls {
		compute = compute || c.Compute
		cmb = cmb || c.CMBBytes > 0
		for _, n := range c.Namespaces {
			if n.CommandSet == "NVM" {
				nvm++
				if n.Bytes != n.Blocks*uint64(n.BlockSize) || n.Bytes == 0 {
					t.Fatalf("namespace %+v", n)
				}
			}
		}
	}
	if len(ctrls) != 3 || !compute || !cmb || nvm != 3 {
		t.Fatalf("demo subsystem listed as %+v", ctrls)
	}
	code, out, _ = runCLI("identify", "--dev", "mock:null")
	if code != exitOK || !strings.Contains(out, "BPFBLKNULL") || !strings.Contains(out, "oncs") {
		t.Fatalf("identify: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI("identify", "--dev", "mock:null", "--json")
	var ids map[string]map[string]string
	if err := json.Unmarshal([]byte(out), &ids); err != nil || code != exitOK || ids["mock0"]["sn"] != "BPFBLKNULL" {
		t.Fatalf("identify --json: exit %d, %v\n%s", code, err, out)
	}
	for _, args := range [][]string{{"list", "--dev", "nope"}, {"identify", "--dev", "pci:0000:01:00"}, {"list", "extra"}} {
		code, out, errOut := runCLI(args...)
		checkUsageError(t, args[0], args, code, out, errOut)
	}
	args := []string{"identify", "--dev", "file:/no/such"}
	code, _, errOut = runCLI(args...)
	checkFailure(t, "identify", args, code, errOut, "no such file")
}
