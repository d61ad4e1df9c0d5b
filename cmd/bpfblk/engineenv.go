package main

import (
	"os"

	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/compute/kernel"
	"github.com/pkg/errors"
)

// engineEnv is the environment variable that picks the engine host cores
// run programs with. The library reads no environment: the CLI reads it
// here and passes the engine on.
const engineEnv = "BPFBLK_ENGINE"

// envEngine returns the engine BPFBLK_ENGINE names ("jit" or
// "interpreter"), or nil when it is unset or empty (then engine.Compile
// picks its default). Any other value is a usage error.
func envEngine() (engine.Engine, error) {
	v := os.Getenv(engineEnv)
	if v == "" {
		return nil, nil
	}
	e := engine.EngineByName(v)
	if e == nil {
		return nil, asUsage(errors.Errorf("%s=%q: unknown engine (want jit or interpreter)", engineEnv, v))
	}
	return e, nil
}

// kernelEnv set to "0" switches off the kernel comparison of
// `bpfblk prog verify --kernel` (compute/kernel reads no environment).
const kernelEnv = "BPFBLK_KERNEL"

// kernelAvailable is kernel.Available unless BPFBLK_KERNEL=0.
func kernelAvailable() error {
	if os.Getenv(kernelEnv) == "0" {
		return errors.New("kernel BPF disabled by BPFBLK_KERNEL=0")
	}
	return kernel.Available()
}
