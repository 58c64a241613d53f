package balancer

import (
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"
)

// handlerState is the net/http side of the proxy: a transport shared by
// ServeHTTP calls.
type handlerState struct {
	once sync.Once
	tr   *http.Transport
}

func (hs *handlerState) transport(p *Proxy) *http.Transport {
	hs.once.Do(func() {
		hs.tr = &http.Transport{
			DialContext:           (&net.Dialer{Timeout: p.cfg.DialTimeout}).DialContext,
			MaxIdleConnsPerHost:   p.cfg.MaxIdlePerNode,
			IdleConnTimeout:       p.cfg.IdleTimeout,
			ResponseHeaderTimeout: p.cfg.ResponseHeaderTimeout,
			DisableCompression:    true,
		}
	})
	return hs.tr
}

func (hs *handlerState) closeIdle() {
	if hs.tr != nil {
		hs.tr.CloseIdleConnections()
	}
}

// ServeHTTP routes r by its Host like the proxy's own server and forwards
// it with net/http's reverse proxy. It is for embedding the balancer in a
// net/http server (HTTP/2, or next to other handlers); the purpose-built
// forwarder behind Run is several times faster. Ejection, bounded load and
// the answers for unknown hosts and dead nodes are the same; the miss hook
// and retries are not applied here.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var buf [256]byte
	host, ok := normalizeHost(buf[:0], []byte(r.Host))
	if !ok {
		http.Error(w, "invalid Host header", http.StatusBadRequest)
		return
	}
	b := p.cur.Load()
	pl := b.t.lookup(host)
	if pl == nil {
		http.Error(w, "unknown host: "+string(host), http.StatusNotFound)
		return
	}
	if p.cfg.MaxBodyBytes > 0 {
		if r.ContentLength > p.cfg.MaxBodyBytes {
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, p.cfg.MaxBodyBytes)
	}
	idx, be := p.pick(b, pl, hostHash(host), nil)
	if be == nil {
		w.Header().Set("Retry-After", strconv.Itoa(int((p.cfg.RetryAfter+time.Second-1)/time.Second)))
		http.Error(w, "no live node for "+string(host), http.StatusServiceUnavailable)
		return
	}
	_ = idx
	p.startInflight(be)
	defer p.endInflight(be)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&url.URL{Scheme: "http", Host: be.addr})
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		Transport: p.handler.transport(p),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			var ne net.Error
			var oe *net.OpError
			switch {
			case errors.As(err, &oe) && oe.Op == "dial":
				p.markFail(be)
				http.Error(w, "cannot reach a node", http.StatusBadGateway)
			case errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
				http.Error(w, "node did not answer in time", http.StatusGatewayTimeout)
			default:
				http.Error(w, "bad gateway", http.StatusBadGateway)
			}
		},
		ModifyResponse: func(*http.Response) error { be.markOK(); return nil },
		ErrorLog:       nil,
	}
	rp.ServeHTTP(w, r)
}
