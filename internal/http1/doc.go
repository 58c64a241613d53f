// Package http1 is paaskit's strict HTTP/1.1 codec (RFC 9112), the only
// one: the balancer's forwarder, internal/evproxy's event loops and the
// runner's node front all parse heads, decode and re-encode chunked
// bodies and normalise hosts with it.
//
// ChunkedDecoder decodes a chunked body fed in slices of any size, with
// no sockets (so the event loops and the goroutine forwarders drive the
// same state machine); AppendChunk, AppendChunkHeader and AppendLastChunk
// re-encode; CheckChunkedPrefix checks the bytes that came with a head;
// NormalizeHost gives a Host value's routing form. FuzzChunkedDecoder and
// FuzzChunkedMessage hold the decoder to net/http's chunked reader: what
// it accepts, net/http accepts with the same body.
//
// The head parser parses a complete head (request
// or status line, fields and the empty line) held in one buffer without
// copying: every slice in a Head points into that buffer and is valid
// until the buffer is reused. HeadEnd finds where a head ends in a
// buffer being filled.
//
// It refuses, rather than guesses at: obs-fold (a field line starting with
// SP or HTAB), a bare CR or a bare LF as a line end, whitespace between a
// field name and its colon, control characters in values, both
// Content-Length and Transfer-Encoding, differing Content-Length values, a
// Content-Length that is a list or not a plain decimal, any
// Transfer-Encoding other than exactly "chunked", a missing or repeated
// Host in a request, request targets other than origin-form (and "*" for
// OPTIONS), CONNECT, and versions other than HTTP/1.0 and HTTP/1.1. Every
// such error wraps ErrMalformed. Hop-by-hop fields (and those a proxy
// rewrites) are marked Drop so a forwarder can skip them when it writes
// the head on. The balancer's FuzzParseRequest checks it differentially
// against net/http's request reader.
package http1
