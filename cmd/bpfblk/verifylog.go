package main

import (
	"errors"
	"flag"
	"io"

	"github.com/bpfblk/bpfblk/compute/verifier"
)

// logFlag registers --log: the verifier's log of a rejection.
func logFlag(fs *flag.FlagSet, v *bool) {
	fs.BoolVar(v, "log", false, "on rejection, print the verifier's log: the instructions on the path that failed, with register states")
}

// printVerifierLog writes the verifier's log of a rejection (when --log
// asked for one) before the one-line error.
func printVerifierLog(w io.Writer, err error) {
	var ve *verifier.Error
	if errors.As(err, &ve) && ve.Log != "" {
		io.WriteString(w, ve.Log)
	}
}
