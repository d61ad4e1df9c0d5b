package mock

import (
	"sync"

	"github.com/bpfblk/bpfblk/nvme"
)

// handler executes one I/O command of a namespace. It runs with the SQ's CQ
// lock held and returns the completion to post.
type handler func(c *Controller, s *sq, ns *namespace, e *nvme.SQE) completion

// CommandSet is the I/O command table of one I/O command set (CSI). The NVM
// command set is built in; the Computational Programs and Subsystem Local
// Memory command sets add their own tables with registerCommandSet, so
// dispatch stays one array lookup per command.
type CommandSet struct {
	// CSI is the command set identifier.
	CSI uint8
	// Name names the command set in messages.
	Name     string
	handlers [256]handler
	// identifyNS builds the command-set-specific Identify Namespace data
	// (CNS 05h); nil returns zeroes.
	identifyNS func(c *Controller, ns *namespace, b []byte)
}

var (
	csMu        sync.RWMutex
	commandSets = map[uint8]*CommandSet{}
)

func registerCommandSet(cs *CommandSet) {
	csMu.Lock()
	commandSets[cs.CSI] = cs
	csMu.Unlock()
}

func commandSet(csi uint8) *CommandSet {
	csMu.RLock()
	defer csMu.RUnlock()
	return commandSets[csi]
}
