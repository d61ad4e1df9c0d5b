// Command genheader writes the helper declarations of filters/bpfblk.h from
// the helper table in compute/abi: it replaces the lines between the two
// marker comments of the header named on the command line. It runs from
// go generate ./compute/abi; a test checks that the header is up to date.
package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	"github.com/pkg/errors"

	"github.com/bpfblk/bpfblk/compute/abi"
)

// The marker lines around the generated section.
const (
	beginMarker = "/* Helpers: generated from the table in compute/abi/helpers.go by go generate ./compute/abi. Do not edit. */"
	endMarker   = "/* End of the generated helpers. */"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: genheader path/to/bpfblk.h")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "genheader:", err)
		os.Exit(1)
	}
}

func run(path string) error {
	old, err := os.ReadFile(path)
	if err != nil {
		return errors.Wrap(err, "read header")
	}
	out, err := splice(old, render(abi.Helpers()))
	if err != nil {
		return errors.Wrap(err, path)
	}
	if bytes.Equal(out, old) {
		return nil
	}
	return errors.Wrap(os.WriteFile(path, out, 0o644), "write header")
}

// splice replaces the lines between the marker lines of header with section.
func splice(header []byte, section string) ([]byte, error) {
	s := string(header)
	b := strings.Index(s, beginMarker+"\n")
	if b < 0 {
		return nil, errors.Errorf("no line %q", beginMarker)
	}
	b += len(beginMarker) + 1
	e := strings.Index(s[b:], endMarker+"\n")
	if e < 0 {
		return nil, errors.Errorf("no line %q after %q", endMarker, beginMarker)
	}
	return []byte(s[:b] + section + s[b+e:]), nil
}

// render writes the C declaration of every helper, each after its comment:
//
//	static long (*name)(type arg, ...) = (void *)id;
//
// Linux ids are written in decimal, bpfblk's own (0x1000 on) in hex.
func render(hs []abi.Helper) string {
	var b strings.Builder
	b.WriteString("/* Map helpers keep their Linux ids. */\n")
	for _, h := range hs {
		writeDoc(&b, h.Doc)
		ret := "long "
		if h.Ret == abi.RetMapValueOrNull {
			ret = "void *"
		}
		args := make([]string, 0, len(h.Args)+1)
		for _, a := range h.Args {
			t := a.CType
			if t == "" {
				t = a.Kind.CType()
			}
			if !strings.HasSuffix(t, "*") {
				t += " "
			}
			args = append(args, t+a.Name)
		}
		if h.Variadic {
			args = append(args, "...")
		}
		id := fmt.Sprintf("%d", h.ID)
		if h.ID >= 0x1000 {
			id = fmt.Sprintf("%#x", h.ID)
		}
		fmt.Fprintf(&b, "static %s(*%s)(%s) = (void *)%s;\n", ret, h.Name, strings.Join(args, ", "), id)
	}
	return b.String()
}

// writeDoc writes a one-line doc as /* doc */ and a longer one as a block.
func writeDoc(b *strings.Builder, doc string) {
	if doc == "" {
		return
	}
	lines := strings.Split(doc, "\n")
	if len(lines) == 1 {
		fmt.Fprintf(b, "/* %s */\n", doc)
		return
	}
	b.WriteString("/*\n")
	for _, l := range lines {
		fmt.Fprintf(b, " * %s\n", l)
	}
	b.WriteString(" */\n")
}
