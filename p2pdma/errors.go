package p2pdma

import "fmt"

// kindError is an error of one of the package's kinds (ErrNoCMB, ErrFull,
// ErrPath, ...) whose message is complete by itself: errors.Is matches the
// kind, and the kind's own text is not appended, so one-line messages stay
// readable.
type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string        { return e.msg }
func (e *kindError) Is(target error) bool { return target == e.kind }

// kindf returns an error of kind with a formatted message.
func kindf(kind error, format string, args ...any) error {
	return &kindError{kind: kind, msg: fmt.Sprintf(format, args...)}
}
