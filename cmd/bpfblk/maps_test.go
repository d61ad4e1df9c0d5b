package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// aggregateFile writes n records {key = i%5, value = i, payload} for
// aggregate.c and returns the path and the expected per-key count and sum.
func aggregateFile(t *testing.T, n int) (string, [5][2]uint64) {
	t.Helper()
	var want [5][2]uint64
	b := make([]byte, 16*n)
	for i := 0; i < n; i++ {
		binary.LittleEndian.PutUint32(b[16*i:], uint32(i%5))
		binary.LittleEndian.PutUint32(b[16*i+4:], uint32(i))
		binary.LittleEndian.PutUint64(b[16*i+8:], ^uint64(i))
		want[i%5][0]++
		want[i%5][1] += uint64(i)
	}
	path := filepath.Join(t.TempDir(), "records")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, want
}

// TestScanMapsJSON: scan --json carries the maps decoded with the program's
// BTF: names, kinds, integer keys, struct values with the C field names, as
// a plain-Go aggregation of the same records computes them.
func TestScanMapsJSON(t *testing.T) {
	const n = 8192
	path, want := aggregateFile(t, n)
	code, out, errOut := runCLI("scan", "--filter", "../../filters/aggregate_bpfel.o", "--dev", "file:"+path, "--engine", "host", "--json")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rep struct {
		Maps []struct {
			Name      string `json:"name"`
			Type      string `json:"type"`
			KeyType   string `json:"key_type"`
			ValueType string `json:"value_type"`
			Entries   []struct {
				Key   uint32          `json:"key"`
				Value json.RawMessage `json:"value"`
			} `json:"entries"`
		} `json:"maps"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(rep.Maps) != 2 {
		t.Fatalf("%d maps:\n%s", len(rep.Maps), out)
	}
	totals, byKey := rep.Maps[0], rep.Maps[1]
	if totals.Name != "totals" || totals.Type != "array" || totals.KeyType != "__u32" || totals.ValueType != "__u64" || len(totals.Entries) != 2 {
		t.Fatalf("totals: %+v", totals)
	}
	var sum uint64
	for _, w := range want {
		sum += w[1]
	}
	if string(totals.Entries[0].Value) != fmt.Sprint(n) || string(totals.Entries[1].Value) != fmt.Sprint(sum) {
		t.Fatalf("totals: %s %s, want %d %d", totals.Entries[0].Value, totals.Entries[1].Value, n, sum)
	}
	if byKey.Name != "by_key" || byKey.Type != "hash" || byKey.ValueType != "struct stats" || len(byKey.Entries) != 5 {
		t.Fatalf("by_key: %+v", byKey)
	}
	for _, e := range byKey.Entries {
		var v struct {
			Count *uint64 `json:"count"`
			Sum   *uint64 `json:"sum"`
		}
		if err := json.Unmarshal(e.Value, &v); err != nil || v.Count == nil || v.Sum == nil {
			t.Fatalf("by_key value %s: %v", e.Value, err)
		}
		if e.Key >= 5 || *v.Count != want[e.Key][0] || *v.Sum != want[e.Key][1] {
			t.Fatalf("by_key[%d] = %s, want count %d sum %d", e.Key, e.Value, want[e.Key][0], want[e.Key][1])
		}
	}
	if strings.Contains(out, "Entries") || strings.Contains(out, "KeySize") {
		t.Fatalf("JSON has Go field names:\n%s", out)
	}
}

// TestScanMapsText: without --json the maps follow the summary on stderr,
// one "key: K  value: V" line per entry, values as the C source declares
// them (testdata/needle.c counts matching blocks per namespace in a hash of
// struct hits); stdout keeps only match lines.
func TestScanMapsText(t *testing.T) {
	const bs, blocks = 512, 64
	data := make([]byte, bs*blocks)
	matching := 0
	for b := 0; b < blocks; b += 3 {
		copy(data[b*bs+100:], "12345")
		matching++
	}
	path := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI("scan", "--filter", "testdata/needle.o", "--set", "needle=12345", "--dev", "file:"+path, "--engine", "host", "-c", "0-1", "--chunk", "4096")
	if code != exitOK || strings.Count(out, "\n") != matching {
		t.Fatalf("exit %d, stdout %q, stderr %s", code, out, errOut)
	}
	want := fmt.Sprintf("map by_ns (hash, key __u32, value struct hits, 1 entries):\n  key: 1  value: {blocks: %d, bytes: %d}\n", matching, matching*bs)
	if !strings.HasSuffix(errOut, want) || !strings.Contains(errOut, "scanned") {
		t.Fatalf("stderr does not end with the summary and\n%s:\n%s", want, errOut)
	}
}

// TestScanSetTyped: --set parses by the variable's C type; errors name the
// variable and its type.
func TestScanSetTyped(t *testing.T) {
	recs := "../../filters/records_bpfel.o"
	for _, tc := range []struct {
		set, msg string
	}{
		{"hi=-1", "--set hi: -1 is negative; __u32 is unsigned"},
		{"lo=4294967296", "--set lo: 4294967296 is out of range for __u32 (0..4294967295)"},
		{"lo=abc", `--set lo: "abc" is not a number (__u32 takes decimal, 0x hex, or hex:BYTES)`},
		{"lo=hex:0102030405", "--set lo: value \"hex:0102030405\" is 5 bytes, __u32 holds 4"},
		{"nosuch=1", "the program has no variable \"nosuch\" (it has: field_offset (__u32), hi (__u32), lo (__u32), record_size (__u32))"},
	} {
		code, _, errOut := runCLI("scan", "--filter", recs, "--set", tc.set, "--count")
		if code == exitOK || !strings.Contains(errOut, tc.msg) {
			t.Errorf("--set %s: exit %d, stderr %q; want %q", tc.set, code, errOut, tc.msg)
		}
	}
	// One record has the value 4000 (0xfa0); none has 4000 < value < 4001.
	path, _ := aggregateFile(t, 8192)
	for _, tc := range []struct{ lo, hi, want string }{{"4000", "0xfa0", "1"}, {"4001", "0xfa0", "0"}} {
		code, out, errOut := runCLI("scan", "--filter", recs, "--dev", "file:"+path, "--engine", "host", "--count",
			"--set", "lo="+tc.lo, "--set", "hi="+tc.hi, "--set", "field_offset=hex:04")
		if code != exitOK || strings.TrimSpace(out) != tc.want {
			t.Fatalf("lo=%s hi=%s: exit %d, stdout %q (want %s), stderr %s", tc.lo, tc.hi, code, out, tc.want, errOut)
		}
	}
	// The built-in filter takes its pattern as text, or as hex:BYTES.
	code, text, _ := runCLI("scan", "--set", "pattern=WARN", "--count")
	code2, hexed, _ := runCLI("scan", "--set", "pattern=hex:5741524e", "--count")
	if code != exitOK || code2 != exitOK || text != hexed || text == "0\n" {
		t.Fatalf("pattern=WARN: %q (exit %d), pattern=hex:5741524e: %q (exit %d)", text, code, hexed, code2)
	}
	if code, _, errOut := runCLI("scan", "--set", "pattern=NINEBYTES", "--count"); code == exitOK || !strings.Contains(errOut, "1 to 8 bytes") {
		t.Fatalf("9-byte pattern: exit %d, %s", code, errOut)
	}
}

// TestProgRunTextParameter: a char[16] parameter takes text: --set
// needle=12345 searches for the text "12345", not for the number's bytes;
// hex: gives the bytes; text longer than the array is refused with the
// variable's C type.
func TestProgRunTextParameter(t *testing.T) {
	const obj = "testdata/needle.o"
	text := writeFile(t, []byte("xx12345yy"))
	number := writeFile(t, []byte{'x', 'x', 0x39, 0x30, 'y', 'y'}) // 12345 as a __u16
	for _, tc := range []struct {
		data, set, want string
	}{
		{text, "needle=12345", "r0 = 1\n"},
		{number, "needle=12345", "r0 = 0\n"},
		{number, "needle=hex:3930", "r0 = 1\n"},
		{text, "needle=hex:3930", "r0 = 0\n"},
	} {
		code, out, errOut := runCLI("prog", "run", obj, "--data", tc.data, "--set", tc.set)
		if code != exitOK || !strings.HasPrefix(out, tc.want) {
			t.Errorf("--set %s: exit %d, stdout %q, stderr %q; want %q", tc.set, code, out, errOut, tc.want)
		}
	}
	code, _, errOut := runCLI("prog", "run", obj, "--data", text, "--set", "needle="+strings.Repeat("x", 17))
	if code != exitUsage || !strings.Contains(errOut, `--set needle: value "xxxxxxxxxxxxxxxxx" is 17 bytes, char[16] holds 16`) {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}
