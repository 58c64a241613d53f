// Package proxyproto parses the PROXY protocol header (versions 1 and 2,
// as HAProxy specifies them) that an outer TCP load balancer puts in
// front of a connection's first byte to say whom the connection is from.
//
// It is a codec with no sockets: Parse works on the bytes read so far
// and says whether a header is complete, incomplete or malformed, so an
// event loop and a blocking reader use it alike. Trust is not decided
// here: a header is only believed from an address the operator named
// (see internal/admit); from anyone else, Sniff recognises one so that
// the connection can be refused instead of being read as HTTP.
package proxyproto
