//go:build linux

package uring

// SetOnSubmit sets the hook that sees each batch Poll submits.
func SetOnSubmit(f func(sqes uint32)) { onSubmit = f }
