// Package csd is the program runner of the emulated computational storage
// device (nvme/mock): it verifies the program images the host loads into a
// compute namespace and runs them on the project's eBPF engine. The
// emulator declares what it needs (mock.ProgramRunner) and has no engine of
// its own; whoever builds a compute device injects Runner:
//
//	mock.Config{Compute: &mock.ComputeConfig{Runner: csd.Runner{}}, ...}
package csd

import (
	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/compute/internal/image"
	"github.com/bpfblk/bpfblk/nvme/mock"
)

// Image encodes a verified program as the program image Runner.Load takes:
// what the host sends with Load Program (PTYPE nvme.ProgTypeEBPF). The format
// is the project's own (compute/internal/image) and may change; a host that
// drives a compute device by hand, without compute.Bdev, encodes with this.
func Image(p *engine.Program) ([]byte, error) { return image.Encode(p) }

// Runner loads program images (Image) and runs them on compute/engine (JIT
// where available). The zero value is ready.
type Runner struct{}

// Load decodes img within mapMemory bytes of maps (0: the engine's
// default) and verifies and compiles it.
func (Runner) Load(img []byte, mapMemory int64) (mock.Program, error) {
	prog, err := image.DecodeWithLimit(img, mapMemory)
	if err != nil {
		return nil, err
	}
	exe, err := engine.Compile(prog, nil)
	if err != nil {
		return nil, err
	}
	return program{exe}, nil
}

type program struct{ exe *engine.Executable }

// NewInstance returns the n-th instance, if the program's maps allow it.
func (p program) NewInstance(n int, budget int64) (mock.ProgramInstance, error) {
	if err := p.exe.Program().CheckInstances(n); err != nil {
		return nil, err
	}
	if budget <= 0 {
		budget = engine.DefaultBudget
	}
	in := &instance{inst: p.exe.NewInstance()}
	in.inst.SetBudget(budget)
	return in, nil
}

// MapState merges the maps of insts and encodes them as map state, the
// answer to Execute Program with nvme.ExecFlagState.
func (p program) MapState(insts []mock.ProgramInstance) []byte {
	es := make([]*engine.Instance, 0, len(insts))
	for _, i := range insts {
		if in, ok := i.(*instance); ok {
			es = append(es, in.inst)
		}
	}
	return image.EncodeMaps(engine.MergeMaps(es...))
}

// instance keeps its engine context so that a run allocates nothing.
type instance struct {
	inst *engine.Instance
	ctx  engine.Context
}

// Run runs the program over ctx.
func (i *instance) Run(ctx *mock.ExecContext, emit []uint64) (mock.ExecOutcome, error) {
	i.ctx = engine.Context{Data: ctx.Data, LBA: ctx.LBA, NSID: ctx.NSID, BlockSize: ctx.BlockSize, BlockCount: ctx.BlockCount}
	res, err := i.inst.Run(&i.ctx, emit)
	if err != nil {
		return mock.ExecOutcome{}, err
	}
	return mock.ExecOutcome{R0: res.R0, Emitted: res.Emitted, Dropped: res.Dropped, Overflow: res.Overflow}, nil
}

var _ mock.ProgramRunner = Runner{}
