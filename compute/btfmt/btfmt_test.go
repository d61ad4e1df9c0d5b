package btfmt

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

var (
	u8     = &btf.Int{Name: "unsigned char", Size: 1}
	char   = &btf.Int{Name: "char", Size: 1, Encoding: btf.Signed}
	u32    = &btf.Int{Name: "unsigned int", Size: 4}
	s32    = &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	s16    = &btf.Int{Name: "short", Size: 2, Encoding: btf.Signed}
	u64    = &btf.Int{Name: "unsigned long long", Size: 8}
	boolT  = &btf.Int{Name: "_Bool", Size: 1, Encoding: btf.Bool}
	typU32 = &btf.Typedef{Name: "__u32", Type: u32}
	typU64 = &btf.Typedef{Name: "__u64", Type: u64}
	typU8  = &btf.Typedef{Name: "__u8", Type: u8}
	stats  = &btf.Struct{Name: "stats", Size: 16, Members: []btf.Member{
		{Name: "count", Type: typU64, Offset: 0},
		{Name: "sum", Type: typU64, Offset: 64},
	}}
	name16 = &btf.Array{Index: u32, Type: char, Nelems: 16}
	color  = &btf.Enum{Name: "color", Size: 4, Values: []btf.EnumValue{{Name: "RED", Value: 0}, {Name: "BLUE", Value: 2}}}
	flags  = &btf.Struct{Name: "flags", Size: 4, Members: []btf.Member{
		{Name: "a", Type: u32, Offset: 0, BitfieldSize: 3},
		{Name: "b", Type: s32, Offset: 3, BitfieldSize: 5},
		{Name: "c", Type: u32, Offset: 8, BitfieldSize: 24},
	}}
	pair = &btf.Union{Name: "pair", Size: 4, Members: []btf.Member{
		{Name: "w", Type: typU32},
		{Name: "h", Type: &btf.Array{Index: u32, Type: s16, Nelems: 2}},
	}}
	rodata = &btf.Datasec{Name: ".rodata", Size: 12, Vars: []btf.VarSecinfo{
		{Type: &btf.Var{Name: "pattern", Type: &btf.Volatile{Type: &btf.Const{Type: typU64}}}, Offset: 0, Size: 8},
		{Type: &btf.Var{Name: "pattern_len", Type: &btf.Const{Type: typU32}}, Offset: 8, Size: 4},
	}}
)

func le(vs ...uint64) []byte {
	var b []byte
	for _, v := range vs {
		for i := 0; i < 8; i++ {
			b = append(b, byte(v>>(8*i)))
		}
	}
	return b
}

func TestFormat(t *testing.T) {
	tests := []struct {
		name       string
		typ        btf.Type
		data       []byte
		text, json string
	}{
		{"u32", typU32, []byte{0x2a, 1, 0, 0}, "298", "298"},
		{"u64 max", typU64, le(^uint64(0)), "18446744073709551615", "18446744073709551615"},
		{"signed", s32, []byte{0xfe, 0xff, 0xff, 0xff}, "-2", "-2"},
		{"bool", boolT, []byte{1}, "true", "true"},
		{"qualified", &btf.Volatile{Type: &btf.Const{Type: typU32}}, []byte{7, 0, 0, 0}, "7", "7"},
		{"struct", stats, le(3, 42), "{count: 3, sum: 42}", `{"count":3,"sum":42}`},
		{"char array", name16, append([]byte("ERROR"), make([]byte, 11)...), `"ERROR"`, `"ERROR"`},
		{"char array full", &btf.Array{Index: u32, Type: char, Nelems: 3}, []byte("abc"), `"abc"`, `"abc"`},
		{"char array binary", &btf.Array{Index: u32, Type: char, Nelems: 3}, []byte{1, 0xff, 0}, "[1, -1, 0]", "[1,-1,0]"},
		{"u8 array stays numbers", &btf.Array{Index: u32, Type: typU8, Nelems: 2}, []byte("hi"), "[104, 105]", "[104,105]"},
		{"quote in string", &btf.Array{Index: u32, Type: char, Nelems: 3}, []byte(`a"b`), `"a\"b"`, `"a\"b"`},
		{"int array", &btf.Array{Index: u32, Type: typU32, Nelems: 3}, []byte{1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0}, "[1, 2, 3]", "[1,2,3]"},
		{"enum", color, []byte{2, 0, 0, 0}, `"BLUE"`, `"BLUE"`},
		{"enum unknown", color, []byte{5, 0, 0, 0}, "5", "5"},
		{"bitfields", flags, []byte{0x05 | 0x1f<<3, 0x34, 0x12, 0}, "{a: 5, b: -1, c: 4660}", `{"a":5,"b":-1,"c":4660}`},
		{"union", pair, []byte{0xff, 0xff, 1, 0}, "{w: 131071, h: [-1, 1]}", `{"w":131071,"h":[-1,1]}`},
		{"datasec", rodata, append(le(0x524f525245), 5, 0, 0, 0), "{pattern: 353518113349, pattern_len: 5}", `{"pattern":353518113349,"pattern_len":5}`},
		{"pointer", &btf.Pointer{Target: u32}, le(0xdead), `"0xdead"`, `"0xdead"`},
		{"no type", nil, []byte{0, 1, 0xab}, "00 01 ab", `["0x00","0x01","0xab"]`},
		{"wrong size", typU32, []byte{1, 2}, "01 02", `["0x01","0x02"]`},
		{"void", &btf.Void{}, []byte{1}, "01", `["0x01"]`},
		{"nested struct", &btf.Struct{Name: "outer", Size: 20, Members: []btf.Member{
			{Name: "id", Type: typU32}, {Name: "s", Type: stats, Offset: 32},
		}}, append([]byte{9, 0, 0, 0}, le(1, 2)...), "{id: 9, s: {count: 1, sum: 2}}", `{"id":9,"s":{"count":1,"sum":2}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Text(tc.typ, tc.data); got != tc.text {
				t.Errorf("Text = %s, want %s", got, tc.text)
			}
			got := JSON(tc.typ, tc.data)
			if string(got) != tc.json {
				t.Errorf("JSON = %s, want %s", got, tc.json)
			}
			if !json.Valid(got) {
				t.Errorf("JSON %s is not valid JSON", got)
			}
		})
	}
}

func TestCType(t *testing.T) {
	tests := []struct {
		typ  btf.Type
		want string
	}{
		{typU32, "__u32"},
		{&btf.Volatile{Type: &btf.Const{Type: typU64}}, "__u64"},
		{name16, "char[16]"},
		{&btf.Array{Index: u32, Type: &btf.Array{Index: u32, Type: s32, Nelems: 3}, Nelems: 2}, "int[2][3]"},
		{stats, "struct stats"},
		{&btf.Pointer{Target: u32}, "unsigned int *"},
		{color, "enum color"},
	}
	for _, tc := range tests {
		if got := CType(tc.typ); got != tc.want {
			t.Errorf("CType(%v) = %q, want %q", tc.typ, got, tc.want)
		}
	}
}

func TestParse(t *testing.T) {
	needle := &btf.Array{Index: u32, Type: char, Nelems: 8}
	s8 := &btf.Int{Name: "signed char", Size: 1, Encoding: btf.Signed}
	tests := []struct {
		typ     btf.Type
		text    string
		want    []byte
		wantErr string
	}{
		{needle, "12345", []byte("12345\x00\x00\x00"), ""},
		{needle, "exactly8", []byte("exactly8"), ""},
		{needle, "too long!", nil, `value "too long!" is 9 bytes, char[8] holds 8`},
		{needle, "hex:00ff", []byte{0, 0xff, 0, 0, 0, 0, 0, 0}, ""},
		{needle, "hex:000102030405060708", nil, "is 9 bytes, char[8] holds 8"},
		{needle, "hex:0g", nil, "not hex bytes"},
		{typU32, "12345", []byte{0x39, 0x30, 0, 0}, ""},
		{typU32, "0x524f5252", []byte("RROR"), ""},
		{typU32, "4294967295", []byte{0xff, 0xff, 0xff, 0xff}, ""},
		{typU32, "4294967296", nil, "4294967296 is out of range for __u32 (0..4294967295)"},
		{typU32, "-1", nil, "-1 is negative; __u32 is unsigned"},
		{typU32, "ERROR", nil, `"ERROR" is not a number (__u32 takes decimal, 0x hex, or hex:BYTES)`},
		{typU32, "hex:45", []byte{0x45, 0, 0, 0}, ""},
		{typU64, "0x524f525245", le(0x524f525245), ""},
		{typU64, "18446744073709551616", nil, "out of range for __u64"},
		{s8, "-128", []byte{0x80}, ""},
		{s8, "127", []byte{0x7f}, ""},
		{s8, "128", nil, "128 is out of range for signed char (-128..127)"},
		{s8, "-129", nil, "-129 is out of range for signed char (-128..127)"},
		{s32, "-2", []byte{0xfe, 0xff, 0xff, 0xff}, ""},
		{boolT, "true", []byte{1}, ""},
		{boolT, "yes", nil, "not true or false (_Bool)"},
		{color, "BLUE", []byte{2, 0, 0, 0}, ""},
		{color, "1", []byte{1, 0, 0, 0}, ""},
		{color, "GREEN", nil, "not an enumerator of enum color"},
		{stats, "1", nil, "struct stats takes only hex:BYTES"},
		{stats, "hex:01", append([]byte{1}, make([]byte, 15)...), ""},
		{&btf.Float{Name: "double", Size: 8}, "1.5", le(0x3ff8000000000000), ""},
	}
	for _, tc := range tests {
		got, err := Parse(tc.typ, tc.text)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Parse(%s, %q) = %v, %v; want error containing %q", CType(tc.typ), tc.text, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, tc.want) {
			t.Errorf("Parse(%s, %q) = %x, %v; want %x", CType(tc.typ), tc.text, got, err, tc.want)
		}
	}
}

func TestParseVariable(t *testing.T) {
	vs := &ebpf.VariableSpec{Name: "needle", SectionName: ".rodata", Value: make([]byte, 256),
		Type: &btf.Var{Name: "needle", Type: &btf.Volatile{Type: &btf.Const{Type: &btf.Array{Index: u32, Type: char, Nelems: 256}}}}}
	_, err := ParseVariable(vs, strings.Repeat("x", 300))
	if err == nil || !strings.HasPrefix(err.Error(), `needle: value "xxx`) || !strings.HasSuffix(err.Error(), "is 300 bytes, char[256] holds 256") {
		t.Fatalf("error %v", err)
	}
	b, err := ParseVariable(vs, "12345")
	if err != nil || string(b[:6]) != "12345\x00" || len(b) != 256 {
		t.Fatalf("%q, %v", b[:8], err)
	}
	if got := VariableType(vs); got != "char[256]" {
		t.Fatalf("VariableType = %q", got)
	}
	// Without BTF: a number of the variable's size.
	raw := &ebpf.VariableSpec{Name: "n", Value: make([]byte, 2)}
	if b, err := ParseVariable(raw, "0x1234"); err != nil || !bytes.Equal(b, []byte{0x34, 0x12}) {
		t.Fatalf("%x, %v", b, err)
	}
	if _, err := ParseVariable(raw, "70000"); err == nil || !strings.Contains(err.Error(), "n: 70000 is out of range for 2 bytes") {
		t.Fatalf("error %v", err)
	}
}

func TestMapOutput(t *testing.T) {
	m := &Map{Name: "by_key", Type: "hash", Key: typU32, Value: stats, Entries: []Entry{
		{Key: []byte{7, 0, 0, 0}, Value: le(3, 42)},
		{Key: []byte{9, 0, 0, 0}, Value: le(1, 5)},
	}}
	var buf bytes.Buffer
	if err := m.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	want := "map by_key (hash, key __u32, value struct stats, 2 entries):\n" +
		"  key: 7  value: {count: 3, sum: 42}\n" +
		"  key: 9  value: {count: 1, sum: 5}\n"
	if buf.String() != want {
		t.Fatalf("text:\n%s\nwant:\n%s", buf.String(), want)
	}
	j, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Name, Type string
		Entries    []struct {
			Key   uint32
			Value struct{ Count, Sum uint64 }
		}
	}
	if err := json.Unmarshal(j, &back); err != nil {
		t.Fatalf("%s: %v", j, err)
	}
	if back.Name != "by_key" || back.Type != "hash" || len(back.Entries) != 2 || back.Entries[0].Key != 7 || back.Entries[0].Value.Sum != 42 || back.Entries[1].Value.Count != 1 {
		t.Fatalf("round trip %s -> %+v", j, back)
	}
	raw := &Map{Name: "m", Type: "array", Entries: []Entry{{Key: []byte{0, 0, 0, 0}, Value: []byte{0xab}}}}
	j, _ = json.Marshal(raw)
	if string(j) != `{"name":"m","type":"array","entries":[{"key":["0x00","0x00","0x00","0x00"],"value":["0xab"]}]}` {
		t.Fatalf("raw JSON %s", j)
	}
}
