package abi_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
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

// helperDecl matches a helper declaration in C: a pointer to a function,
// initialised with the helper id.
var helperDecl = regexp.MustCompile(`\(\*(\w+)\)\(([^;]*)\) = \(void \*\)(0x[0-9a-fA-F]+|\d+);`)

// TestHelpersMatchHeaders reads every C header and source in the module
// (bpfblk.h and any that declares helpers of its own) and checks each helper
// declaration's id, name and number of arguments against the helper table,
// and that bpfblk.h declares every helper of the table.
func TestHelpersMatchHeaders(t *testing.T) {
	root := "../.."
	byName := map[string]abi.Helper{}
	for _, h := range abi.Helpers() {
		byName[h.Name] = h
	}
	declared := map[string]bool{}
	files := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".h") && !strings.HasSuffix(path, ".c") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for _, m := range helperDecl.FindAllStringSubmatch(string(src), -1) {
			name, params := m[1], strings.Split(m[2], ",")
			id, err := strconv.ParseUint(m[3], 0, 32)
			if err != nil {
				t.Fatal(err)
			}
			h, ok := byName[name]
			if !ok {
				t.Errorf("%s: helper %s (id %d) is not in the helper table", path, name, id)
				continue
			}
			if uint32(id) != h.ID {
				t.Errorf("%s: %s = %d, the helper table says %d", path, name, id, h.ID)
			}
			variadic := strings.TrimSpace(params[len(params)-1]) == "..."
			if variadic {
				params = params[:len(params)-1]
			}
			if len(params) != len(h.Args) || variadic != h.Variadic {
				t.Errorf("%s: %s takes %d arguments (variadic %v), the helper table says %d (variadic %v)",
					path, name, len(params), variadic, len(h.Args), h.Variadic)
			}
			if filepath.Base(path) == "bpfblk.h" {
				declared[name] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 || len(declared) == 0 {
		t.Fatalf("no helper declarations found under %s (%d C files)", root, files)
	}
	for name := range byName {
		if !declared[name] {
			t.Errorf("helper %s is missing from bpfblk.h", name)
		}
	}
}

// TestHelperTable checks the rows themselves: unique ids and names, at most
// five arguments, every pointer with a length after it, every length after
// a pointer, map keys and values after one map argument.
func TestHelperTable(t *testing.T) {
	ids, names := map[uint32]bool{}, map[string]bool{}
	for _, h := range abi.Helpers() {
		if ids[h.ID] || names[h.Name] {
			t.Errorf("%s (%d): id or name repeated", h.Name, h.ID)
		}
		ids[h.ID], names[h.Name] = true, true
		if got, ok := abi.HelperByID(h.ID); !ok || got.Name != h.Name {
			t.Errorf("HelperByID(%d) = %v %v", h.ID, got.Name, ok)
		}
		if len(h.Args) > 5 || h.Ret != abi.RetScalar && h.Ret != abi.RetMapValueOrNull {
			t.Errorf("%s: %d arguments, return kind %d", h.Name, len(h.Args), h.Ret)
		}
		maps, sized := 0, map[int]bool{}
		for i, a := range h.Args {
			switch a.Kind {
			case abi.ArgMap, abi.ArgMapWritable, abi.ArgMapHash:
				maps++
			case abi.ArgMapKey, abi.ArgMapValue:
				if maps != 1 {
					t.Errorf("%s: %s is not after one map argument", h.Name, a.Name)
				}
			case abi.ArgMem:
				j := h.SizeArg(i)
				if j < 0 {
					t.Errorf("%s: no length after pointer %s", h.Name, a.Name)
				}
				sized[j] = true
			}
			if a.Kind.CType() == "?" {
				t.Errorf("%s: %s has kind %d", h.Name, a.Name, a.Kind)
			}
		}
		for i, a := range h.Args {
			if a.Kind == abi.ArgSize && !sized[i] {
				t.Errorf("%s: length %s follows no pointer", h.Name, a.Name)
			}
		}
		if h.Ret == abi.RetMapValueOrNull && maps != 1 {
			t.Errorf("%s returns a map value but takes %d maps", h.Name, maps)
		}
	}
	if _, ok := abi.HelperByID(0x7777); ok {
		t.Error("HelperByID(0x7777) found a helper")
	}
	emit, _ := abi.HelperByID(abi.HelperEmit)
	if emit.Allowed(abi.TypeXDP) || !emit.Allowed(abi.TypeScan) {
		t.Error("bpfblk_emit: wrong program types")
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
