package http1

import "strconv"

// AppendRequestHead appends the head of request h as a forwarder passes
// it on to its target, and returns the extended slice: the request line
// in HTTP/1.1; host as the Host field when h has none (HTTP/1.0); the
// fields not marked Drop; X-Forwarded-For extended with clientIP; then
// X-Forwarded-Proto set to proto and X-Forwarded-Host to h's Host or,
// with keepForwarded (a forwarder behind another that set them), the
// client's own first X-Forwarded-Proto and X-Forwarded-Host, which the
// parser marked Drop, where it sent them; the framing (Content-Length or chunked); Connection:
// Upgrade with the Upgrade field for an upgrade; and the empty line.
// Every forwarder writes its requests' heads with it.
func AppendRequestHead(dst []byte, h *Head, host []byte, clientIP, proto string, keepForwarded bool) []byte {
	dst = append(dst, h.Method...)
	dst = append(dst, ' ')
	dst = append(dst, h.Target...)
	dst = append(dst, " HTTP/1.1\r\n"...)
	if h.Host == nil {
		dst = append(dst, "Host: "...)
		dst = append(dst, host...)
		dst = append(dst, "\r\n"...)
	}
	dst = AppendFields(dst, h.Fields)
	dst = append(dst, "X-Forwarded-For: "...)
	if h.XFF != nil {
		dst = append(dst, h.XFF...)
		dst = append(dst, ", "...)
	}
	dst = append(dst, clientIP...)
	dst = append(dst, "\r\n"...)
	keptProto, keptHost := false, false
	if keepForwarded {
		for i := range h.Fields {
			f := &h.Fields[i]
			if !f.Drop {
				continue
			}
			isProto := !keptProto && asciiEqualFold(f.Name, "x-forwarded-proto")
			isHost := !keptHost && !isProto && asciiEqualFold(f.Name, "x-forwarded-host")
			if isProto || isHost {
				keptProto, keptHost = keptProto || isProto, keptHost || isHost
				dst = append(dst, f.Name...)
				dst = append(dst, ": "...)
				dst = append(dst, f.Value...)
				dst = append(dst, "\r\n"...)
			}
		}
	}
	if !keptProto {
		dst = append(dst, "X-Forwarded-Proto: "...)
		dst = append(dst, proto...)
		dst = append(dst, "\r\n"...)
	}
	if !keptHost && h.Host != nil {
		dst = append(dst, "X-Forwarded-Host: "...)
		dst = append(dst, h.Host...)
		dst = append(dst, "\r\n"...)
	}
	if h.ContentLength >= 0 {
		dst = append(dst, "Content-Length: "...)
		dst = strconv.AppendInt(dst, h.ContentLength, 10)
		dst = append(dst, "\r\n"...)
	} else if h.Chunked {
		dst = append(dst, "Transfer-Encoding: chunked\r\n"...)
	}
	if h.ConnUpgrade {
		dst = append(dst, "Connection: Upgrade\r\nUpgrade: "...)
		dst = append(dst, h.Upgrade...)
		dst = append(dst, "\r\n"...)
	}
	return append(dst, "\r\n"...)
}

// DropPrefixed marks Drop every field whose name starts with the
// lower-case prefix pre, ignoring case: a forwarder's DropFieldPrefix,
// so that a target cannot forge the fields the platform gives a meaning
// to.
func DropPrefixed(fields []Field, pre string) {
	for i := range fields {
		if f := &fields[i]; len(f.Name) >= len(pre) && asciiEqualFold(f.Name[:len(pre)], pre) {
			f.Drop = true
		}
	}
}

// AppendReply appends a forwarder's own plain-text answer to dst: the
// status line, Content-Type text/plain with nosniff, Connection: close
// unless keep, Content-Length, the extra header lines ("Name: value"),
// the empty line and, when withBody (not for a HEAD request), body.
func AppendReply(dst []byte, status int, reason, body string, extra []string, keep, withBody bool) []byte {
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(status), 10)
	dst = append(dst, ' ')
	dst = append(dst, reason...)
	dst = append(dst, "\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n"...)
	if !keep {
		dst = append(dst, "Connection: close\r\n"...)
	}
	dst = append(dst, "Content-Length: "...)
	dst = strconv.AppendInt(dst, int64(len(body)), 10)
	dst = append(dst, "\r\n"...)
	for _, e := range extra {
		dst = append(dst, e...)
		dst = append(dst, "\r\n"...)
	}
	dst = append(dst, "\r\n"...)
	if withBody {
		dst = append(dst, body...)
	}
	return dst
}
