package buildsandbox

import (
	"fmt"
	"net"
	"net/url"
)

// urlHostPort is an http(s) URL's host and port, the port from the scheme
// when the URL has none.
func urlHostPort(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	port := u.Port()
	switch {
	case port != "":
	case u.Scheme == "https":
		port = "443"
	case u.Scheme == "http":
		port = "80"
	default:
		return "", fmt.Errorf("scheme %q: want http or https", u.Scheme)
	}
	if u.Hostname() == "" {
		return "", fmt.Errorf("no host")
	}
	return net.JoinHostPort(u.Hostname(), port), nil
}
