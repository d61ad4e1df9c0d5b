package abi_test

import (
	"os"
	"regexp"
	"strconv"
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/bpfblk/bpfblk/compute/abi"
	"github.com/bpfblk/bpfblk/filters"
)

// TestContextLayoutMatchesHeader reads struct bpfblk_ctx and struct xdp_md
// from the BTF that clang emitted for the filters and compares the offsets
// with the Go constants.
func TestContextLayoutMatchesHeader(t *testing.T) {
	spec, err := filters.LoadRecords()
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, size int, want map[string]int) {
		var s *btf.Struct
		if err := spec.Types.TypeByName(name, &s); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if int(s.Size) != size {
			t.Errorf("sizeof(struct %s) = %d, abi says %d", name, s.Size, size)
		}
		for _, m := range s.Members {
			off, ok := want[m.Name]
			if !ok {
				continue
			}
			if int(m.Offset.Bytes()) != off {
				t.Errorf("%s.%s at %d, abi says %d", name, m.Name, m.Offset.Bytes(), off)
			}
			delete(want, m.Name)
		}
		if len(want) != 0 {
			t.Errorf("%s: fields missing from the header: %v", name, want)
		}
	}
	check("bpfblk_ctx", abi.CtxSize, map[string]int{
		"data": abi.CtxData, "data_end": abi.CtxDataEnd, "lba": abi.CtxLBA, "nsid": abi.CtxNSID,
		"block_size": abi.CtxBlockSize, "block_count": abi.CtxBlockCount, "reserved": abi.CtxReserved,
	})
	pat, err := filters.LoadPattern()
	if err != nil {
		t.Fatal(err)
	}
	spec = pat
	check("xdp_md", abi.XDPCtxSize, map[string]int{"data": abi.XDPData, "data_end": abi.XDPDataEnd, "data_meta": abi.XDPDataMeta})
}

// TestHelperIDsMatchHeader compares the helper numbers in bpfblk.h with the
// Go constants.
func TestHelperIDsMatchHeader(t *testing.T) {
	h, err := os.ReadFile("../../filters/bpfblk.h")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{
		"bpf_map_lookup_elem": abi.HelperMapLookup, "bpf_map_update_elem": abi.HelperMapUpdate,
		"bpf_map_delete_elem": abi.HelperMapDelete, "bpf_trace_printk": abi.HelperTrace,
		"bpfblk_emit": abi.HelperEmit, "bpfblk_memcmp": abi.HelperMemcmp, "bpfblk_memmem": abi.HelperMemmem,
	}
	re := regexp.MustCompile(`\(\*(\w+)\)\([^;]*\) = \(void \*\)(0x[0-9a-fA-F]+|\d+);`)
	for _, m := range re.FindAllStringSubmatch(string(h), -1) {
		id, err := strconv.ParseInt(m[2], 0, 64)
		if err != nil {
			t.Fatal(err)
		}
		if w, ok := want[m[1]]; !ok || w != id {
			t.Errorf("%s = %d in bpfblk.h, abi says %d", m[1], id, w)
		}
		delete(want, m[1])
	}
	if len(want) != 0 {
		t.Errorf("helpers missing from bpfblk.h: %v", want)
	}
}

func TestTypeForSection(t *testing.T) {
	for sec, want := range map[string]abi.Type{"bpfblk/filter": abi.TypeFilter, "bpfblk/scan": abi.TypeScan, "xdp": abi.TypeXDP} {
		if got, ok := abi.TypeForSection(sec); !ok || got != want || got.String() != sec {
			t.Errorf("%s: %v %v", sec, got, ok)
		}
	}
	if _, ok := abi.TypeForSection("socket"); ok {
		t.Error("socket accepted")
	}
}
