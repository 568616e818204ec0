package esclient

import (
	"errors"
	"sync"
	"time"
)

// ErrBreakerOpen is the cause of the Unavailable error of a call refused without being made,
// because recent calls to its endpoint failed: the endpoint's circuit breaker is open.
var ErrBreakerOpen = errors.New("circuit breaker open: recent calls to the encryption service failed")

// outcome is what one attempt says about the endpoint's health.
type outcome int

const (
	reachable   outcome = iota // it answered, even with an error of its own
	unreachable                // it could not be reached, or timed out, or said it is unavailable
	abandoned                  // the caller gave up first: says nothing about the endpoint
)

type breakerState int

const (
	closed   breakerState = iota // calls go through
	open                         // calls fail fast until the cooldown ends
	halfOpen                     // one probe call goes through; the others fail fast
)

func (s breakerState) String() string {
	switch s {
	case closed:
		return "closed"
	case open:
		return "open"
	default:
		return "half-open"
	}
}

// breaker is a circuit breaker for one endpoint: after threshold consecutive unreachable
// attempts it opens for cooldown, failing calls fast; then it lets one probe through, and closes
// if the probe reaches the endpoint or opens again if not.
type breaker struct {
	threshold int
	cooldown  time.Duration
	now       func() time.Time
	onChange  func(from, to breakerState) // called with mu held: must not call back

	mu        sync.Mutex
	state     breakerState
	failures  int // consecutive unreachable attempts while closed
	openUntil time.Time
	probing   bool // a half-open probe is out
}

func newBreaker(threshold int, cooldown time.Duration, onChange func(from, to breakerState)) *breaker {
	if onChange == nil {
		onChange = func(breakerState, breakerState) {}
	}
	return &breaker{threshold: threshold, cooldown: cooldown, now: time.Now, onChange: onChange}
}

// allow says whether an attempt may be made now, and whether it is the half-open probe; it
// returns ErrBreakerOpen when not. An allowed attempt must be reported to done.
func (b *breaker) allow() (probe bool, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case closed:
		return false, nil
	case open:
		if b.now().Before(b.openUntil) {
			return false, ErrBreakerOpen
		}
		b.set(halfOpen)
	}
	if b.probing {
		return false, ErrBreakerOpen
	}
	b.probing = true
	return true, nil
}

// done reports an allowed attempt's outcome.
func (b *breaker) done(probe bool, o outcome) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if probe {
		b.probing = false
		switch o {
		case reachable:
			b.failures = 0
			b.set(closed)
		case unreachable:
			b.trip()
		}
		return
	}
	// Attempts that started while closed; the state may have changed since.
	if b.state != closed {
		return
	}
	switch o {
	case reachable:
		b.failures = 0
	case unreachable:
		b.failures++
		if b.failures >= b.threshold {
			b.trip()
		}
	}
}

func (b *breaker) trip() {
	b.failures = 0
	b.openUntil = b.now().Add(b.cooldown)
	b.set(open)
}

func (b *breaker) set(s breakerState) {
	if b.state != s {
		from := b.state
		b.state = s
		b.onChange(from, s)
	}
}
