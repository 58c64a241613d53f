package pyinstall

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"deps.dev/util/semver"
)

// Env holds the PEP 508 environment-marker values of the target interpreter
// (python_version, sys_platform, ...). The key "extra" is set per evaluation.
type Env map[string]string

// Marker is a parsed PEP 508 environment marker.
type Marker struct {
	raw  string
	root markerNode
}

type markerNode interface {
	eval(env Env) bool
	extras(set map[string]bool)
}

type markerBool struct {
	and         bool
	left, right markerNode
}

func (m markerBool) eval(env Env) bool {
	if m.and {
		return m.left.eval(env) && m.right.eval(env)
	}
	return m.left.eval(env) || m.right.eval(env)
}

func (m markerBool) extras(set map[string]bool) {
	m.left.extras(set)
	m.right.extras(set)
}

type markerValue struct {
	variable string // set for an environment variable
	literal  string
}

type markerCmp struct {
	left, right markerValue
	op          string
}

var markerVariables = map[string]bool{
	"python_version": true, "python_full_version": true, "os_name": true,
	"sys_platform": true, "platform_release": true, "platform_system": true,
	"platform_version": true, "platform_machine": true,
	"platform_python_implementation": true, "implementation_name": true,
	"implementation_version": true, "extra": true,
	// Legacy names pip still accepts.
	"os.name": true, "sys.platform": true, "platform.version": true,
	"platform.machine": true, "platform.python_implementation": true,
	"python_implementation": true,
}

var legacyNames = map[string]string{
	"os.name": "os_name", "sys.platform": "sys_platform", "platform.version": "platform_version",
	"platform.machine": "platform_machine", "platform.python_implementation": "platform_python_implementation",
	"python_implementation": "platform_python_implementation",
}

func (v markerValue) value(env Env) string {
	if v.variable == "" {
		return v.literal
	}
	return env[v.variable]
}

func (c markerCmp) eval(env Env) bool {
	l, r := c.left.value(env), c.right.value(env)
	if c.left.variable == "extra" || c.right.variable == "extra" {
		// Extras compare normalized (PEP 685).
		l, r = NormalizeName(l), NormalizeName(r)
	}
	switch c.op {
	case "in":
		return strings.Contains(r, l)
	case "not in":
		return !strings.Contains(r, l)
	}
	// A version comparison when the right side is a version specifier
	// and the left a version; otherwise Python string comparison.
	if lv, err := semver.PyPI.Parse(l); err == nil {
		if con, err := semver.PyPI.ParseConstraint(c.op + r); err == nil {
			return con.MatchVersionPrerelease(lv)
		}
	}
	switch c.op {
	case "==", "===":
		return l == r
	case "!=":
		return l != r
	case "<":
		return l < r
	case "<=":
		return l <= r
	case ">":
		return l > r
	case ">=":
		return l >= r
	}
	return false
}

func (c markerCmp) extras(set map[string]bool) {
	if c.left.variable == "extra" && c.right.variable == "" {
		set[NormalizeName(c.right.literal)] = true
	}
	if c.right.variable == "extra" && c.left.variable == "" {
		set[NormalizeName(c.left.literal)] = true
	}
}

// ParseMarker parses a PEP 508 marker expression.
func ParseMarker(s string) (*Marker, error) {
	p := &markerParser{s: s}
	n, err := p.or()
	if err != nil {
		return nil, err
	}
	p.ws()
	if p.pos != len(p.s) {
		return nil, fmt.Errorf("marker %q: unexpected %q at offset %d", s, p.s[p.pos:], p.pos)
	}
	return &Marker{raw: s, root: n}, nil
}

// String returns the marker as written.
func (m *Marker) String() string { return m.raw }

// Eval evaluates the marker in env with the given extra ("" for none).
func (m *Marker) Eval(env Env, extra string) bool {
	e := make(Env, len(env)+1)
	for k, v := range env {
		e[k] = v
	}
	e["extra"] = extra
	return m.root.eval(e)
}

// Extras returns the normalized extra names the marker compares against,
// sorted.
func (m *Marker) Extras() []string {
	set := map[string]bool{}
	m.root.extras(set)
	out := make([]string, 0, len(set))
	for e := range set {
		out = append(out, e)
	}
	sort.Strings(out)
	return out
}

type markerParser struct {
	s   string
	pos int
}

func (p *markerParser) ws() {
	for p.pos < len(p.s) && (p.s[p.pos] == ' ' || p.s[p.pos] == '\t') {
		p.pos++
	}
}

func (p *markerParser) errf(format string, args ...any) error {
	return fmt.Errorf("marker %q at offset %d: %s", p.s, p.pos, fmt.Sprintf(format, args...))
}

func (p *markerParser) keyword(kw string) bool {
	p.ws()
	if !strings.HasPrefix(p.s[p.pos:], kw) {
		return false
	}
	end := p.pos + len(kw)
	if end < len(p.s) && isIdent(p.s[end]) {
		return false
	}
	p.pos = end
	return true
}

func isIdent(b byte) bool {
	return b == '_' || b == '.' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9'
}

func (p *markerParser) or() (markerNode, error) {
	left, err := p.and()
	if err != nil {
		return nil, err
	}
	for p.keyword("or") {
		right, err := p.and()
		if err != nil {
			return nil, err
		}
		left = markerBool{and: false, left: left, right: right}
	}
	return left, nil
}

func (p *markerParser) and() (markerNode, error) {
	left, err := p.expr()
	if err != nil {
		return nil, err
	}
	for p.keyword("and") {
		right, err := p.expr()
		if err != nil {
			return nil, err
		}
		left = markerBool{and: true, left: left, right: right}
	}
	return left, nil
}

func (p *markerParser) expr() (markerNode, error) {
	p.ws()
	if p.pos < len(p.s) && p.s[p.pos] == '(' {
		p.pos++
		n, err := p.or()
		if err != nil {
			return nil, err
		}
		p.ws()
		if p.pos >= len(p.s) || p.s[p.pos] != ')' {
			return nil, p.errf("expected )")
		}
		p.pos++
		return n, nil
	}
	l, err := p.value()
	if err != nil {
		return nil, err
	}
	op, err := p.op()
	if err != nil {
		return nil, err
	}
	r, err := p.value()
	if err != nil {
		return nil, err
	}
	if l.variable == "" && r.variable == "" {
		return nil, p.errf("comparison of two literals")
	}
	return markerCmp{left: l, right: r, op: op}, nil
}

var markerOps = []string{"===", "==", "!=", "<=", ">=", "~=", "<", ">"}

func (p *markerParser) op() (string, error) {
	p.ws()
	for _, op := range markerOps {
		if strings.HasPrefix(p.s[p.pos:], op) {
			p.pos += len(op)
			return op, nil
		}
	}
	if p.keyword("in") {
		return "in", nil
	}
	save := p.pos
	if p.keyword("not") && p.keyword("in") {
		return "not in", nil
	}
	p.pos = save
	return "", p.errf("expected a comparison operator")
}

var identRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*`)

func (p *markerParser) value() (markerValue, error) {
	p.ws()
	if p.pos >= len(p.s) {
		return markerValue{}, p.errf("expected a variable or a quoted string")
	}
	if q := p.s[p.pos]; q == '"' || q == '\'' {
		end := strings.IndexByte(p.s[p.pos+1:], q)
		if end < 0 {
			return markerValue{}, p.errf("unterminated string")
		}
		v := p.s[p.pos+1 : p.pos+1+end]
		p.pos += end + 2
		return markerValue{literal: v}, nil
	}
	id := identRe.FindString(p.s[p.pos:])
	if id == "" || !markerVariables[id] {
		return markerValue{}, p.errf("unknown marker variable %q", id)
	}
	p.pos += len(id)
	if n, ok := legacyNames[id]; ok {
		id = n
	}
	return markerValue{variable: id}, nil
}
