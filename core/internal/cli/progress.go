package cli

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// progressBar draws on stderr when it is a terminal, and does nothing otherwise (scripts, CI).
type progressBar struct {
	w     io.Writer // nil: draw nothing
	label string
	mu    sync.Mutex
	last  time.Time
	drawn bool
}

func (e *env) progress(label string) *progressBar {
	p := &progressBar{label: label}
	if e.stderrIsTerminal() {
		p.w = e.stderr
	}
	return p
}

const barWidth = 30

// fraction draws done of total (units), as a bar when total is known.
func (p *progressBar) fraction(done, total int64, units string) {
	if total <= 0 {
		p.count(done, units)
		return
	}
	if done > total {
		done = total
	}
	filled := int(done * barWidth / total)
	p.draw(fmt.Sprintf("%s [%s%s] %3d%% %d/%d %s", p.label, strings.Repeat("█", filled), strings.Repeat("░", barWidth-filled),
		done*100/total, done, total, units), done == total)
}

// count draws a running count when the total is unknown.
func (p *progressBar) count(n int64, units string) {
	p.draw(fmt.Sprintf("%s… %d %s", p.label, n, units), false)
}

// bytes draws bytes read of size (0: unknown).
func (p *progressBar) bytes(n, size int64) {
	if size > 0 {
		p.fraction(n, size, "bytes")
		return
	}
	p.count(n, "bytes")
}

func (p *progressBar) draw(line string, force bool) {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !force && time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.last = time.Now()
	fmt.Fprintf(p.w, "\r\033[K%s", line)
	p.drawn = true
}

// done ends the bar's line.
func (p *progressBar) done() {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprintln(p.w)
	}
}
