package desttest

import (
	"net"
	"net/http"
)

// CutAfter returns a ResponseWriter that passes the first n bytes of a
// response on to w, then resets the connection: a download cut off on the
// way, which a real server does not do on demand.
func CutAfter(w http.ResponseWriter, n int) http.ResponseWriter {
	return &cutWriter{ResponseWriter: w, left: n}
}

type cutWriter struct {
	http.ResponseWriter
	left int
}

func (c *cutWriter) Write(p []byte) (int, error) {
	if c.left < 0 {
		return 0, net.ErrClosed
	}
	n := min(len(p), c.left)
	c.ResponseWriter.Write(p[:n])
	if c.left -= n; n == len(p) {
		return n, nil
	}
	c.left = -1
	rc := http.NewResponseController(c.ResponseWriter)
	rc.Flush()
	if conn, _, err := rc.Hijack(); err == nil {
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetLinger(0) // RST rather than FIN
		}
		conn.Close()
	}
	return n, net.ErrClosed
}
