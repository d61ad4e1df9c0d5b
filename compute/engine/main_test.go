package engine

import (
	"flag"
	"fmt"
	"os"
	"testing"
)

// TestMain runs the package's tests once per engine: every test that
// compiles with Compile(p, nil) checks the JIT and the interpreter alike.
// Benchmarks and fuzzing name their engines themselves and run once, and so
// does a run that writes a profile, a trace or coverage (a second pass would
// overwrite it); BPFBLK_ENGINE then picks the engine.
func TestMain(m *testing.M) {
	flag.Parse()
	engines := []Engine{Default()}
	single := false
	for _, f := range []string{"test.bench", "test.fuzz", "test.cpuprofile", "test.memprofile",
		"test.blockprofile", "test.mutexprofile", "test.trace", "test.coverprofile", "test.gocoverdir"} {
		single = single || flagValue(f) != ""
	}
	if e := EngineByName(os.Getenv("BPFBLK_ENGINE")); e != nil {
		engines = []Engine{e}
	}
	if jitAvailable && !single {
		engines = []Engine{JIT, Interpreter}
	}
	code := 0
	for _, e := range engines {
		defaultEngine = e
		if testing.Verbose() || len(engines) > 1 {
			fmt.Printf("== engine: %s\n", e.Name())
		}
		if c := m.Run(); c != 0 {
			code = c
		}
	}
	os.Exit(code)
}

func flagValue(name string) string {
	if f := flag.Lookup(name); f != nil {
		return f.Value.String()
	}
	return ""
}
