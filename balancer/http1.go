package balancer

import "github.com/paaskit/paaskit/internal/http1"

// The strict HTTP/1.1 head parser lives in internal/http1, shared with
// internal/evproxy (and later the runner's node front).

type (
	head  = http1.Head
	field = http1.Field
)

// ErrMalformed is wrapped by every error for a message that does not
// follow RFC 9112 (answered with 400 for requests, 502 for responses). It
// is internal/http1's sentinel.
var ErrMalformed = http1.ErrMalformed

var (
	errTooManyFields  = http1.ErrTooManyFields
	parseRequestHead  = http1.ParseRequestHead
	parseResponseHead = http1.ParseResponseHead
	isToken           = http1.IsToken
	malformed         = http1.Malformed
	normalizeHost     = http1.NormalizeHost
)
