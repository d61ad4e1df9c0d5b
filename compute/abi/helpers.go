package abi

//go:generate go run ./internal/genheader ../../filters/bpfblk.h

// Helper function ids. Map helpers keep their Linux numbers. Each has a row
// in the helper table (Helpers), which is what the verifier, the engine and
// filters/bpfblk.h are derived from or checked against.
const (
	HelperMapLookup = 1      // void *bpf_map_lookup_elem(map, key)
	HelperMapUpdate = 2      // long bpf_map_update_elem(map, key, value, flags)
	HelperMapDelete = 3      // long bpf_map_delete_elem(map, key)
	HelperTrace     = 6      // long bpf_trace_printk(fmt, fmt_size, ...)
	HelperEmit      = 0x1000 // long bpfblk_emit(ctx, value)
	HelperMemcmp    = 0x1001 // long bpfblk_memcmp(a, b, len)
	HelperMemmem    = 0x1002 // long bpfblk_memmem(hay, hay_len, needle, needle_len)
)

// ArgKind is what a helper argument (r1 to r5) must hold when the program
// calls the helper. The verifier checks each argument by its kind.
type ArgKind uint8

// Argument kinds.
const (
	// ArgScalar is any initialised scalar (__u64 in C).
	ArgScalar ArgKind = iota + 1
	// ArgMap is a map pointer (void *map). A helper has at most one, and it
	// comes before the ArgMapKey and ArgMapValue arguments that refer to it.
	ArgMap
	// ArgMapWritable is an ArgMap that must not be read-only (.rodata).
	ArgMapWritable
	// ArgMapHash is an ArgMap that must be a hash map (entries can be
	// deleted only from those).
	ArgMapHash
	// ArgMapKey points to a key of the helper's map: its key size of
	// initialised memory (const void *).
	ArgMapKey
	// ArgMapValue points to a value of the helper's map: its value size of
	// initialised memory (const void *).
	ArgMapValue
	// ArgCtx is the context pointer the program was called with, unmoved
	// (struct bpfblk_ctx *).
	ArgCtx
	// ArgMem points to memory (stack, map value or data) of the length in
	// the first ArgSize argument after it (const void *).
	ArgMem
	// ArgSize is a bounded scalar, the length of the ArgMem arguments
	// before it (__u32).
	ArgSize
)

// Ret is what a helper returns in r0.
type Ret uint8

// Return kinds.
const (
	// RetScalar is a number (long in C): a result or a negative errno.
	RetScalar Ret = iota + 1
	// RetMapValueOrNull points to a value of the helper's map, or is NULL
	// (void * in C); the program must compare it with 0 before using it.
	RetMapValueOrNull
)

// Arg is one argument of a helper: its C name, its kind and, where the
// kind's usual C type does not fit, the C type bpfblk.h declares.
type Arg struct {
	Name  string
	Kind  ArgKind
	CType string // "" for the kind's type
}

// Helper is one row of the helper table: everything the verifier, the
// engine and bpfblk.h need to know of a helper except its implementation.
type Helper struct {
	ID   uint32
	Name string // the C name in bpfblk.h
	// Args are r1, r2, ... in order; the registers after them are not read.
	Args []Arg
	// Variadic helpers also pass r(len(Args)+1) to r5 on unchecked (any
	// value, even uninitialised).
	Variadic bool
	Ret      Ret
	// Types are the program types that may call the helper; none means all.
	Types []Type
	// Doc is the helper's comment in bpfblk.h ("" for none).
	Doc string
}

// helpers is the table, in the order bpfblk.h declares the helpers.
var helpers = []Helper{
	{ID: HelperMapLookup, Name: "bpf_map_lookup_elem", Ret: RetMapValueOrNull,
		Args: []Arg{{"map", ArgMap, ""}, {"key", ArgMapKey, ""}}},
	{ID: HelperMapUpdate, Name: "bpf_map_update_elem", Ret: RetScalar,
		Args: []Arg{{"map", ArgMapWritable, ""}, {"key", ArgMapKey, ""}, {"value", ArgMapValue, ""}, {"flags", ArgScalar, ""}}},
	{ID: HelperMapDelete, Name: "bpf_map_delete_elem", Ret: RetScalar,
		Args: []Arg{{"map", ArgMapHash, ""}, {"key", ArgMapKey, ""}}},
	{ID: HelperTrace, Name: "bpf_trace_printk", Ret: RetScalar, Variadic: true,
		Args: []Arg{{"fmt", ArgMem, "const char *"}, {"fmt_size", ArgSize, ""}}},
	{ID: HelperEmit, Name: "bpfblk_emit", Ret: RetScalar, Types: []Type{TypeFilter, TypeScan},
		Args: []Arg{{"ctx", ArgCtx, ""}, {"value", ArgScalar, ""}},
		Doc: "bpfblk_emit appends value to the run's match list; -28 (ENOSPC) when full.\n" +
			"A scanner emits byte offsets from data. The host sizes the list so that\n" +
			"every value arrives (a run that filled it is run again with more room,\n" +
			"when the program has no writable maps); values that still do not fit are\n" +
			"reported as lost, never dropped silently."},
	{ID: HelperMemcmp, Name: "bpfblk_memcmp", Ret: RetScalar,
		Args: []Arg{{"a", ArgMem, ""}, {"b", ArgMem, ""}, {"len", ArgSize, ""}},
		Doc:  "bpfblk_memcmp compares len bytes: <0, 0, >0 like memcmp."},
	{ID: HelperMemmem, Name: "bpfblk_memmem", Ret: RetScalar,
		Args: []Arg{{"hay", ArgMem, ""}, {"hay_len", ArgSize, ""}, {"needle", ArgMem, ""}, {"needle_len", ArgSize, ""}},
		Doc:  "bpfblk_memmem returns the offset of needle in haystack, or -1."},
}

// Helpers returns the helper table, in the order bpfblk.h declares the
// helpers. The slice is a copy; the rows' Args and Types are shared and must
// not be modified.
func Helpers() []Helper { return append([]Helper(nil), helpers...) }

// HelperByID returns the row of helper id. It does not allocate.
func HelperByID(id uint32) (Helper, bool) {
	for _, h := range helpers {
		if h.ID == id {
			return h, true
		}
	}
	return Helper{}, false
}

// Allowed reports whether a program of type t may call h.
func (h Helper) Allowed(t Type) bool {
	if len(h.Types) == 0 {
		return true
	}
	for _, a := range h.Types {
		if a == t {
			return true
		}
	}
	return false
}

// SizeArg returns the index in h.Args of the length of pointer argument i
// (an ArgMem): the first ArgSize after it, or -1 if there is none.
func (h Helper) SizeArg(i int) int {
	for j := i + 1; j < len(h.Args); j++ {
		if h.Args[j].Kind == ArgSize {
			return j
		}
	}
	return -1
}

// CType returns the C type of an argument of kind k as bpfblk.h declares it.
func (k ArgKind) CType() string {
	switch k {
	case ArgScalar:
		return "__u64"
	case ArgMap, ArgMapWritable, ArgMapHash:
		return "void *"
	case ArgMapKey, ArgMapValue, ArgMem:
		return "const void *"
	case ArgCtx:
		return "struct bpfblk_ctx *"
	case ArgSize:
		return "__u32"
	}
	return "?"
}
