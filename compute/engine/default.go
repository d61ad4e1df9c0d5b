package engine

import (
	"sync"
)

var (
	defaultOnce   sync.Once
	defaultEngine Engine
)

// Default returns the engine Compile uses when given nil: the JIT where it
// is available (linux/amd64), the interpreter elsewhere. (The package reads
// no environment: a tool that lets its users choose, as bpfblk does with
// BPFBLK_ENGINE, passes EngineByName's engine to Compile.)
func Default() Engine {
	defaultOnce.Do(func() {
		defaultEngine = Interpreter
		if jitAvailable {
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
