package engine_test

import (
	"encoding/binary"
	"encoding/json"
	"strings"
	"testing"

	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/filters"
)

// TestMapContentsAggregate: the maps of aggregate.c come out as the C source
// declares them: totals an array of __u64, by_key a hash of __u32 to
// struct stats {count, sum}.
func TestMapContentsAggregate(t *testing.T) {
	cs, err := filters.LoadAggregate()
	if err != nil {
		t.Fatal(err)
	}
	p, err := engine.LoadSpec(cs, nil)
	if err != nil {
		t.Fatal(err)
	}
	x, err := engine.Compile(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	inst := x.NewInstance()
	// Records {key, value, payload}: key 3 twice (values 10, 20), key 5 once (7).
	data := make([]byte, 4096)
	for i, r := range [][2]uint32{{3, 10}, {5, 7}, {3, 20}} {
		binary.LittleEndian.PutUint32(data[16*i:], r[0])
		binary.LittleEndian.PutUint32(data[16*i+4:], r[1])
	}
	if _, err := inst.Run(&engine.Context{Data: data[:48], BlockSize: 48}, make([]uint64, 16)); err != nil {
		t.Fatal(err)
	}
	maps := p.MapContents(engine.MergeMaps(inst))
	if len(maps) != 2 {
		t.Fatalf("%d maps", len(maps))
	}
	var text strings.Builder
	for i := range maps {
		if err := maps[i].WriteText(&text); err != nil {
			t.Fatal(err)
		}
	}
	want := "map totals (array, key __u32, value __u64, 2 entries):\n" +
		"  key: 0  value: 3\n" +
		"  key: 1  value: 37\n" +
		"map by_key (hash, key __u32, value struct stats, 2 entries):\n" +
		"  key: 3  value: {count: 2, sum: 30}\n" +
		"  key: 5  value: {count: 1, sum: 7}\n"
	if text.String() != want {
		t.Fatalf("text:\n%s\nwant:\n%s", text.String(), want)
	}
	j, err := json.Marshal(maps)
	if err != nil {
		t.Fatal(err)
	}
	var back []struct {
		Name    string `json:"name"`
		Type    string `json:"type"`
		Entries []struct {
			Key   uint32          `json:"key"`
			Value json.RawMessage `json:"value"`
		} `json:"entries"`
	}
	if err := json.Unmarshal(j, &back); err != nil {
		t.Fatalf("%s: %v", j, err)
	}
	if back[1].Name != "by_key" || back[1].Type != "hash" || back[1].Entries[0].Key != 3 ||
		string(back[1].Entries[0].Value) != `{"count":2,"sum":30}` {
		t.Fatalf("JSON %s", j)
	}
}
