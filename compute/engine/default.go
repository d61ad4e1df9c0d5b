package engine

import (
	"os"
	"sync"
)

var (
	defaultOnce   sync.Once
	defaultEngine Engine
)

// Default returns the engine Compile uses when given nil: the JIT where it
// is available (linux/amd64), the interpreter elsewhere. The environment
// variable BPFBLK_ENGINE=interpreter (or =jit) overrides the choice for the
// whole process, for comparing engines without changing code.
func Default() Engine {
	defaultOnce.Do(func() {
		defaultEngine = Interpreter
		if jitAvailable {
			defaultEngine = JIT
		}
		switch os.Getenv("BPFBLK_ENGINE") {
		case "interpreter":
			defaultEngine = Interpreter
		case "jit":
			defaultEngine = JIT
		}
	})
	return defaultEngine
}

// EngineByName returns the engine called name ("jit" or "interpreter"), or
// nil.
func EngineByName(name string) Engine {
	switch name {
	case "jit":
		return JIT
	case "interpreter":
		return Interpreter
	}
	return nil
}
