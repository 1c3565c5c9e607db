package api

import (
	"bytes"
	"encoding/json"
	"net/http"
)

// unmatchedAsJSON answers the router's own 404 and 405 (no route, or a route without this
// method) in the API's error shape instead of the mux's text/plain, keeping the Allow
// header of a 405.
func unmatchedAsJSON(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		cw := &codeOnly{header: http.Header{}}
		mux.ServeHTTP(cw, r)
		if cw.code != http.StatusNotFound && cw.code != http.StatusMethodNotAllowed {
			// A redirect (a cleaned path, a missing trailing slash): the mux's answer stands.
			for k, v := range cw.header {
				w.Header()[k] = v
			}
			w.WriteHeader(cw.code)
			_, _ = w.Write(cw.body.Bytes())
			return
		}
		msg := "no such route: " + r.URL.Path
		if cw.code == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", cw.header.Get("Allow"))
			msg = "method " + r.Method + " is not allowed here; allowed: " + cw.header.Get("Allow")
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(cw.code)
		_ = json.NewEncoder(w).Encode(newError(cw.code, msg))
	})
}

// codeOnly records what the mux would answer.
type codeOnly struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (c *codeOnly) Header() http.Header { return c.header }
func (c *codeOnly) WriteHeader(code int) {
	if c.code == 0 {
		c.code = code
	}
}
func (c *codeOnly) Write(b []byte) (int, error) {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	return c.body.Write(b)
}
