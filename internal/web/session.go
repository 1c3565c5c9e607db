package web

import (
	"errors"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/loopze/certstore/internal/auth"
)

// loginData is the sign-in page's content.
type loginData struct {
	Next    string
	Error   string
	Notice  string
	Expired bool
}

// maxLoginBody bounds the sign-in form: a token is well under 16 KiB.
const maxLoginBody = 64 << 10

// errNotAUser refuses a session whose role is not viewer, editor or admin.
var errNotAUser = errors.New("the token's role cannot use the web UI")

// session returns the signed-in user from the session cookie, or an error wrapping
// auth.ErrNoToken when there is none. Pages read only the cookie: a browser never sends a
// bearer header on its own.
func (h *Handler) session(r *http.Request) (*auth.Principal, error) {
	if h.cfg.Verifier == nil {
		return nil, errors.New("authentication is not configured")
	}
	c, err := r.Cookie(auth.CookieName)
	if err != nil || c.Value == "" {
		return nil, auth.ErrNoToken
	}
	p, err := h.cfg.Verifier.Verify(c.Value)
	if err != nil {
		return nil, err
	}
	if !p.Role.Allows(auth.Viewer) { // a runtime token reads the credentials route only
		return nil, errNotAUser
	}
	p.Via = auth.ViaCookie
	return &p, nil
}

// requireSession returns the signed-in user or sends the browser to the sign-in page,
// remembering where it wanted to go. A user past its rate limit gets a 429 page instead.
func (h *Handler) requireSession(w http.ResponseWriter, r *http.Request) *auth.Principal {
	p, err := h.session(r)
	if err == nil {
		if h.cfg.Limit != nil && !h.cfg.Limit(w, p) {
			h.errorPage(w, r, http.StatusTooManyRequests, p,
				"Too many requests from your account just now. Try again in "+w.Header().Get("Retry-After")+" seconds.")
			return nil
		}
		return p
	}
	q := url.Values{"next": {r.URL.RequestURI()}}
	if !errors.Is(err, auth.ErrNoToken) {
		// A cookie that no longer verifies (expired, keys rotated) deserves a word,
		// unlike a first visit.
		q.Set("expired", "1")
	}
	http.Redirect(w, r, "/login?"+q.Encode(), http.StatusSeeOther)
	return nil
}

func (h *Handler) home(w http.ResponseWriter, r *http.Request) {
	http.Redirect(w, r, "/certs", http.StatusSeeOther)
}

func (h *Handler) loginPage(w http.ResponseWriter, r *http.Request) {
	next := safeNext(r.URL.Query().Get("next"))
	if _, err := h.session(r); err == nil {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	d := loginData{Next: next, Expired: r.URL.Query().Get("expired") == "1"}
	if r.URL.Query().Get("signedout") == "1" {
		d.Notice = "You are signed out."
	}
	h.render(w, r, http.StatusOK, "login", view{Title: "Sign in", Page: "login", Data: d})
}

// login checks the pasted token and, when it verifies, stores it in the session cookie
// until the token itself expires. A cross-site form cannot sign a browser in to an
// attacker's session: the origin check refuses it.
func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	if err := h.origins.Check(r); err != nil {
		h.errorPage(w, r, http.StatusForbidden, nil, "Sign-in forms must be sent from this site.")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginBody)
	if err := r.ParseForm(); err != nil {
		h.errorPage(w, r, http.StatusBadRequest, nil, "The sign-in form could not be read.")
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	token := strings.TrimSpace(r.PostForm.Get("token"))
	fail := func(msg string) {
		h.render(w, r, http.StatusUnauthorized, "login", view{Title: "Sign in", Page: "login",
			Data: loginData{Next: next, Error: msg}})
	}
	if token == "" {
		fail("Paste a token to sign in.")
		return
	}
	if h.cfg.Verifier == nil {
		fail("Sign-in is not configured on this server.")
		return
	}
	p, err := h.cfg.Verifier.Verify(token)
	if err != nil {
		h.log.Info("web sign-in refused", "request_id", w.Header().Get("X-Request-Id"), "reason", err)
		fail("That token is not valid: it may have expired, be for another server, or be cut short.")
		return
	}
	if !p.Role.Allows(auth.Viewer) {
		fail("That token has the " + p.Role.String() + " role, which cannot sign in: use a viewer, editor or admin token.")
		return
	}
	exp, err := expiry(token)
	if err != nil {
		fail("That token has no expiry time.")
		return
	}
	http.SetCookie(w, h.cookie(r, token, exp))
	h.log.Info("web sign-in", "request_id", w.Header().Get("X-Request-Id"), "sub", p.Subject, "tenant", p.Tenant, "role", p.Role.String())
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// logout clears the session cookie.
func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	if err := h.origins.Check(r); err != nil {
		h.errorPage(w, r, http.StatusForbidden, nil, "Sign-out forms must be sent from this site.")
		return
	}
	c := h.cookie(r, "", time.Unix(0, 0))
	c.MaxAge = -1
	http.SetCookie(w, c)
	http.Redirect(w, r, "/login?signedout=1", http.StatusSeeOther)
}

// cookie builds the session cookie: unreadable to scripts, never sent cross-site, Secure
// whenever the page itself is served over TLS, and gone when the token expires.
func (h *Handler) cookie(r *http.Request, token string, exp time.Time) *http.Cookie {
	c := &http.Cookie{
		Name:     auth.CookieName,
		Value:    token,
		Path:     "/",
		Expires:  exp.UTC(),
		HttpOnly: true,
		SameSite: http.SameSiteStrictMode,
		Secure:   r.TLS != nil || h.cfg.SecureCookies,
	}
	if token != "" {
		c.MaxAge = max(1, int(time.Until(exp).Seconds()))
	}
	return c
}

// expiry reads the exp claim of a token the Verifier has already accepted; the signature
// is not checked again here.
func expiry(token string) (time.Time, error) {
	var c jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &c); err != nil {
		return time.Time{}, err
	}
	if c.ExpiresAt == nil {
		return time.Time{}, errors.New("token has no exp claim")
	}
	return c.ExpiresAt.Time, nil
}

// safeNext keeps the post-sign-in redirect on this site. The candidate is cleaned first,
// exactly as http.Redirect will clean it, and the cleaned form is what is judged and
// returned: checking the raw string and letting the redirect clean it afterwards turned
// "/./\host" into "/\host", which browsers resolve to another origin. Anything that is not
// a plain same-origin path (a scheme, a host, "//", any backslash, control characters
// browsers strip, raw or percent-encoded) falls back to the list.
func safeNext(next string) string {
	const fallback = "/certs"
	if next == "" || next[0] != '/' || strings.HasPrefix(next, "//") || hasUnsafeByte(next) {
		return fallback
	}
	p, query, _ := strings.Cut(next, "?")
	if i := strings.IndexByte(query, '#'); i >= 0 {
		query = query[:i]
	}
	if i := strings.IndexByte(p, '#'); i >= 0 {
		p, query = p[:i], ""
	}
	trailing := strings.HasSuffix(p, "/")
	p = path.Clean(p)
	if trailing && !strings.HasSuffix(p, "/") {
		p += "/"
	}
	cleaned := p
	if query != "" {
		cleaned += "?" + query
	}
	if strings.HasPrefix(cleaned, "//") {
		return fallback
	}
	u, err := url.Parse(cleaned)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" {
		return fallback
	}
	// The decoded forms must be as plain as the raw one: "/%5Chost" or "/%2F%2Fhost" are
	// harmless to a browser today, but nothing legitimate needs them.
	q, err := url.QueryUnescape(u.RawQuery)
	if err != nil || hasUnsafeByte(u.Path) || hasUnsafeByte(q) || strings.HasPrefix(u.Path, "//") || !strings.HasPrefix(u.Path, "/") {
		return fallback
	}
	if path.Clean(u.Path) == "/login" {
		return fallback
	}
	return cleaned
}

// hasUnsafeByte reports a backslash or an ASCII control character (tab, CR and LF
// included, which browsers silently drop from URLs).
func hasUnsafeByte(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '\\' || c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}
