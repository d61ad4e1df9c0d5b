package main

import (
	"os"
	"strings"
	"testing"

	"github.com/bpfblk/bpfblk/compute/abi"
)

const header = "../../../../filters/bpfblk.h"

// TestHeaderUpToDate fails when the helper section of bpfblk.h is not what
// the helper table generates: run go generate ./compute/abi.
func TestHeaderUpToDate(t *testing.T) {
	old, err := os.ReadFile(header)
	if err != nil {
		t.Fatal(err)
	}
	out, err := splice(old, render(abi.Helpers()))
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != string(old) {
		t.Fatalf("filters/bpfblk.h differs from the helper table; run go generate ./compute/abi\nwant section:\n%s", render(abi.Helpers()))
	}
}

// TestRenderFollowsTable checks the generator against a row it has not seen,
// so that a change of the table changes the header.
func TestRenderFollowsTable(t *testing.T) {
	got := render([]abi.Helper{{ID: 0x1003, Name: "bpfblk_new", Ret: abi.RetScalar, Variadic: true,
		Args: []abi.Arg{{Name: "p", Kind: abi.ArgMem}, {Name: "n", Kind: abi.ArgSize}}, Doc: "one\ntwo"}})
	want := "/* Map helpers keep their Linux ids. */\n/*\n * one\n * two\n */\n" +
		"static long (*bpfblk_new)(const void *p, __u32 n, ...) = (void *)0x1003;\n"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

func TestSpliceNeedsMarkers(t *testing.T) {
	if _, err := splice([]byte("no markers\n"), "x"); err == nil {
		t.Fatal("header without markers accepted")
	}
	if _, err := splice([]byte(beginMarker+"\nold\n"), "x"); err == nil || !strings.Contains(err.Error(), "End") {
		t.Fatalf("header without end marker: %v", err)
	}
	out, err := splice([]byte("a\n"+beginMarker+"\nold\n"+endMarker+"\nb\n"), "new\n")
	if err != nil || string(out) != "a\n"+beginMarker+"\nnew\n"+endMarker+"\nb\n" {
		t.Fatalf("%q %v", out, err)
	}
}
