package engine_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"sync"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfblk/bpfblk/compute/abi"
	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/compute/kernel"
	"github.com/bpfblk/bpfblk/filters"
)

// kernelAvailable is kernel.Available, unless BPFBLK_KERNEL=0 in the
// environment switches the kernel half of the tests off.
func kernelAvailable() error {
	if os.Getenv("BPFBLK_KERNEL") == "0" {
		return errors.New("kernel BPF disabled by BPFBLK_KERNEL=0")
	}
	return kernel.Available()
}

func needKernel(t testing.TB) {
	t.Helper()
	if err := kernelAvailable(); err != nil {
		t.Skipf("skipping the kernel half: %v", err)
	}
}

var patternSpec = sync.OnceValues(filters.LoadPattern)

func patternVars(pat string) map[string]any {
	var p8 [8]byte
	copy(p8[:], pat)
	return map[string]any{"pattern": binary.LittleEndian.Uint64(p8[:]), "pattern_len": uint32(len(pat))}
}

// TestKernelPatternXDP runs pattern_xdp in the engine and in the kernel on the
// same inputs and compares the answers, and both with bytes.Contains.
func TestKernelPatternXDP(t *testing.T) {
	needKernel(t)
	cs, err := patternSpec()
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, pat := range []string{"a", "ab", "xyz", "bpfblk!", "01234567"} {
		vars := patternVars(pat)
		kp, err := kernel.LoadSpec(cs, "pattern_xdp", vars)
		if err != nil {
			t.Fatal(err)
		}
		p, err := engine.LoadSpec(cs, &engine.LoadOptions{Program: "pattern_xdp", Vars: vars})
		if err != nil {
			t.Fatal(err)
		}
		x, err := engine.Compile(p, nil)
		if err != nil {
			t.Fatal(err)
		}
		inst := x.NewInstance()
		for i := 0; i < 40; i++ {
			n := kernel.MinData + rng.IntN(kernel.MaxData-kernel.MinData+1)
			data := make([]byte, n)
			for j := range data {
				data[j] = 'a' + byte(rng.IntN(3)) // small alphabet: natural matches
			}
			if i%3 == 0 {
				copy(data[rng.IntN(n-len(pat)+1):], pat)
			}
			if i%5 == 0 {
				copy(data[n-len(pat):], pat) // the tail window
			}
			want := bytes.Contains(data, []byte(pat))
			kret, _, err := kp.Run(data)
			if err != nil {
				t.Fatal(err)
			}
			res, err := inst.Run(&engine.Context{Data: data}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if uint64(kret) != res.R0 || (res.R0 == 1) != want {
				t.Fatalf("pattern %q, %d bytes: kernel %d, engine %d, bytes.Contains %v", pat, n, kret, res.R0, want)
			}
		}
		kp.Close()
	}
}

// TestKernelRejectsWhatEngineRejects checks a few rejections against the
// kernel's verifier: both must refuse.
func TestKernelAgreesOnRejections(t *testing.T) {
	needKernel(t)
	for _, tc := range rejectCases() {
		if !tc.kernel {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			if _, err := engine.FromInstructions("t", abi.TypeXDP, tc.prog); err == nil {
				t.Fatal("engine accepted")
			}
			if kp, err := kernel.LoadInstructions(tc.prog); err == nil {
				kp.Close()
				t.Fatal("kernel accepted")
			}
		})
	}
}

var _ = ebpf.XDP
