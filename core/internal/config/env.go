package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// env reads typed values from an injected getenv and collects every problem, so that a
// misconfigured deployment learns about all of its mistakes at once. Values named as secrets may
// instead be given as a file path in NAME_FILE (Kubernetes secrets mounted as files); the value
// itself never appears in an error.
type env struct {
	getenv func(string) string
	errs   []error
}

func (e *env) fail(name, format string, args ...any) {
	e.errs = append(e.errs, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...)))
}

func (e *env) err() error { return errors.Join(e.errs...) }

// str returns the variable's value, or def when it is unset or empty.
func (e *env) str(name, def string) string {
	if v := strings.TrimSpace(e.getenv(name)); v != "" {
		return v
	}
	return def
}

// secret returns NAME, or the contents of the file named by NAME_FILE. Exactly one may be set.
func (e *env) secret(name string, required bool) string {
	v := e.getenv(name)
	path := strings.TrimSpace(e.getenv(name + "_FILE"))
	switch {
	case v != "" && path != "":
		e.fail(name, "set either %s or %s_FILE, not both", name, name)
		return ""
	case path != "":
		b, err := os.ReadFile(path)
		if err != nil {
			e.fail(name+"_FILE", "read %s: %v", path, errors.Unwrap(err))
			return ""
		}
		v = string(b)
	}
	v = strings.TrimSpace(v)
	if v == "" && required {
		e.fail(name, "required (or %s_FILE)", name)
	}
	return v
}

// file returns a path that must name a readable file.
func (e *env) file(name string, required bool) string {
	p := e.str(name, "")
	if p == "" {
		if required {
			e.fail(name, "required: path to a PEM file")
		}
		return ""
	}
	if st, err := os.Stat(p); err != nil {
		e.fail(name, "cannot read %s: %v", p, errors.Unwrap(err))
	} else if st.IsDir() {
		e.fail(name, "%s is a directory, want a file", p)
	}
	return p
}

func (e *env) integer(name string, def, minimum, maximum int) int {
	s := e.str(name, "")
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < minimum || n > maximum {
		e.fail(name, "want an integer from %d to %d, got %q", minimum, maximum, s)
		return def
	}
	return n
}

func (e *env) duration(name string, def, minimum, maximum time.Duration) time.Duration {
	s := e.str(name, "")
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < minimum || d > maximum {
		e.fail(name, "want a duration from %s to %s such as \"30s\", got %q", minimum, maximum, s)
		return def
	}
	return d
}

func (e *env) boolean(name string, def bool) bool {
	s := e.str(name, "")
	if s == "" {
		return def
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		e.fail(name, "want true or false, got %q", s)
		return def
	}
	return b
}

func (e *env) oneOf(name, def string, allowed ...string) string {
	s := strings.ToLower(e.str(name, def))
	for _, a := range allowed {
		if s == a {
			return s
		}
	}
	e.fail(name, "want one of %s, got %q", strings.Join(allowed, ", "), s)
	return def
}

// address returns a host:port listen or dial address.
func (e *env) address(name, def string) string {
	s := e.str(name, def)
	i := strings.LastIndex(s, ":")
	if i < 0 {
		e.fail(name, "want host:port such as %q, got %q", def, s)
		return def
	}
	if p, err := strconv.Atoi(s[i+1:]); err != nil || p < 0 || p > 65535 {
		e.fail(name, "want a port from 0 to 65535 in %q", s)
		return def
	}
	return s
}

// prefixes returns a comma-separated list of IP addresses and CIDR ranges ("10.0.0.0/8",
// "192.0.2.7", "2001:db8::/32") as prefixes; a bare address is a prefix of one address. Ranges
// with host bits set ("10.0.0.1/8") are refused as likely typos, as are loopback ranges, which
// the service keeps for its own probes.
func (e *env) prefixes(name string) []netip.Prefix {
	s := e.str(name, "")
	if s == "" {
		return nil
	}
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		var p netip.Prefix
		var err error
		if strings.Contains(f, "/") {
			p, err = netip.ParsePrefix(f)
			if err == nil && p != p.Masked() {
				e.fail(name, "%q has bits set beyond its prefix length; did you mean %s?", f, p.Masked())
				continue
			}
		} else {
			var a netip.Addr
			if a, err = netip.ParseAddr(f); err == nil && a.Zone() != "" {
				err = errors.New("zoned address")
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if err != nil {
			e.fail(name, "want comma-separated IP addresses or CIDR ranges such as 10.0.0.0/8, got %q", f)
			continue
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), max(0, p.Bits()-(p.Addr().BitLen()-p.Addr().Unmap().BitLen())))
		if p.Contains(netip.AddrFrom4([4]byte{127, 0, 0, 1})) || p.Contains(netip.IPv6Loopback()) {
			e.fail(name, "%q includes loopback, where the service's own probes connect without a PROXY header", f)
			continue
		}
		out = append(out, p)
	}
	return out
}
