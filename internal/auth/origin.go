package auth

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// newOriginCheck builds the cross-origin guard for cookie-authenticated writes. It is the
// standard library's CrossOriginProtection: it trusts the browser's Sec-Fetch-Site when
// present and otherwise compares Origin with Host, serving requests that carry neither
// (curl, scripts). Configured origins are normalised to what browsers send, because the
// library matches them byte for byte.
func newOriginCheck(allowed []string) (*http.CrossOriginProtection, error) {
	c := http.NewCrossOriginProtection()
	for _, o := range allowed {
		n, err := normaliseOrigin(o)
		if err != nil {
			return nil, fmt.Errorf("allowed origin %q: %w", o, err)
		}
		if err := c.AddTrustedOrigin(n); err != nil {
			return nil, fmt.Errorf("allowed origin %q: %w", o, err)
		}
	}
	return c, nil
}

// normaliseOrigin lower-cases scheme and host, drops the scheme's default port and a
// trailing slash, and refuses anything that is not an http(s) origin; "*" in particular
// would switch the protection off.
func normaliseOrigin(o string) (string, error) {
	u, err := url.Parse(strings.TrimSuffix(strings.TrimSpace(o), "/"))
	if err != nil {
		return "", fmt.Errorf("parse: %w", err)
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return "", fmt.Errorf("scheme must be http or https")
	}
	if u.Host == "" || u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("must be scheme://host[:port] only")
	}
	host := strings.ToLower(u.Host)
	if port := u.Port(); (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		host = strings.ToLower(u.Hostname())
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
	}
	return scheme + "://" + host, nil
}

// checkOrigin refuses a cookie-authenticated unsafe request from a foreign origin.
// "Origin: null" (sandboxed frames, file: pages, some redirects) is refused outright: it
// names no host, and the library would let it through when the request has no Host.
func (v *Verifier) checkOrigin(r *http.Request) error {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return nil
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		if u, err := url.Parse(origin); err != nil || u.Host == "" {
			return fmt.Errorf("%w: Origin names no host", ErrForbiddenOrigin)
		}
	}
	if err := v.origins.Check(r); err != nil {
		return fmt.Errorf("%w: %w", ErrForbiddenOrigin, err)
	}
	return nil
}
