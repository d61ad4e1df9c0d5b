package mock

import "github.com/pkg/errors"

// The program runner of the emulated compute device, declared here and
// implemented above nvme (compute/csd), so that the emulator builds without
// the verifier and the engines.

// ProgramRunner verifies program images and makes them runnable.
type ProgramRunner interface {
	// Load decodes and verifies a whole program image. mapMemory bounds
	// the memory of its maps over all its instances (0: the runner's
	// default). An error refuses the program; its text goes to the
	// device's log.
	Load(image []byte, mapMemory int64) (Program, error)
}

// Program is a loaded, verified program.
type Program interface {
	// NewInstance returns a new instance of the program, the n-th one
	// (one per submission queue that runs it), whose runs stop after
	// budget instructions (0: the runner's default). An error means the
	// program allows no n-th instance (its maps would not fit).
	NewInstance(n int, budget int64) (ProgramInstance, error)
	// MapState returns the maps of insts merged into one state, encoded
	// for the host (the Execute Program state read).
	MapState(insts []ProgramInstance) []byte
}

// ProgramInstance is one submission queue's instance of a program, used by
// one goroutine at a time.
type ProgramInstance interface {
	// Run runs the program over ctx, writing emitted values to emit. An
	// error is a program fault. A run allocates nothing.
	Run(ctx *ExecContext, emit []uint64) (ExecOutcome, error)
}

// ExecContext is what one Execute Program runs over.
type ExecContext struct {
	Data       []byte // the input range, DLEN bytes
	LBA        uint64 // LBA of the first block (CDW10-11)
	NSID       uint32 // namespace of the data (CDW12)
	BlockSize  uint32 // block size (CDW13), 0: the data is one unit
	BlockCount uint32 // len(Data)/BlockSize
}

// ExecOutcome is what a run produced.
type ExecOutcome struct {
	R0       uint64 // the program's return value
	Emitted  int    // values written to emit
	Dropped  int    // values that did not fit
	Overflow bool   // some values did not fit
}

var errNoRunner = errors.New("the device has no program runner")
