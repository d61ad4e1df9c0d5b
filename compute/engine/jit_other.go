//go:build !(linux && amd64)

package engine

import "github.com/pkg/errors"

// JIT compiles programs to machine code where a code generator exists
// (linux/amd64); here Compile with it returns an error and Default is the
// interpreter.
var JIT Engine = jitEngine{}

const jitAvailable = false

type jitEngine struct{}

func (jitEngine) Name() string { return "jit" }

func (jitEngine) build(*Program) (compiled, error) {
	return nil, errors.New("jit: no code generator for this platform")
}
