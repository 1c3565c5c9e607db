// Package web is the operator's web UI of the certificate store: the sign-in page that
// turns a token into the session cookie, the Certificates pages (list, new, edit, delete)
// and the offline API reference at /docs. Pages are html/template views rendered on the
// server from the catalogue; writes go from the browser to the JSON API with the session
// cookie, so the UI can do nothing the API would refuse. Templates, scripts and styles are
// embedded in the binary and served under a strict Content-Security-Policy, so the UI
// works air-gapped and no inline script ever runs.
package web

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/loopze/certstore/internal/auth"
	"github.com/loopze/certstore/internal/repo"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// ContentSecurityPolicy is sent with every UI response: scripts, styles and fetches only
// from this origin, no inline script or style, no framing, forms post only here.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; " +
	"frame-ancestors 'none'; form-action 'self'"

// Catalog is what the pages read from the certificate catalogue; *catalog.Service
// implements it. Every call is scoped to the signed-in user's tenant.
type Catalog interface {
	List(ctx context.Context, tenant string, f repo.ListFilter) ([]*repo.Entry, bool, error)
	Get(ctx context.Context, tenant, id string) (*repo.Entry, error)
	References(ctx context.Context, tenant, id string, after *repo.RefCursor, limit int) ([]repo.Reference, int, error)
}

// Config is what the UI needs.
type Config struct {
	Logger *slog.Logger
	// Verifier checks the token on sign-in and the session cookie on every page.
	Verifier *auth.Verifier
	Catalog  Catalog
	// History lists an entry's versions for its History page; nil leaves the page out.
	History History
	// Audit lists the tenant's audit trail for admins; nil leaves the page out.
	Audit AuditLog
	// SecureCookies marks the session cookie Secure even when the request did not arrive
	// over TLS here, for deployments behind a TLS-terminating proxy.
	SecureCookies bool
	// Limit, when set, charges each page a signed-in user opens to the rate-limit bucket
	// of the user's subject, the one its API requests draw from. It returns false when that
	// bucket is empty, having set Retry-After on w; the page is then not served.
	Limit func(w http.ResponseWriter, p *auth.Principal) bool
	// Now is the clock for expiry badges; nil means time.Now.
	Now func() time.Time
}

// Handler serves the UI. Register mounts its routes on a mux.
type Handler struct {
	cfg     Config
	log     *slog.Logger
	pages   map[string]*template.Template
	assets  map[string]asset
	origins *http.CrossOriginProtection
}

// asset is one embedded static file with its content hash, for ETags and cache busting.
type asset struct {
	body  []byte
	etag  string
	ctype string
}

// pageNames are the views; each is parsed together with the layout.
var pageNames = []string{"login", "list", "form", "delete", "docs", "error", "history", "audit"}

// New parses the embedded templates and indexes the static files. It panics only when the
// embedded files themselves are broken, which the tests catch.
func New(cfg Config) *Handler {
	h := &Handler{cfg: cfg, log: cfg.Logger, assets: map[string]asset{}, origins: http.NewCrossOriginProtection()}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	err := fs.WalkDir(staticFS, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := staticFS.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		h.assets[strings.TrimPrefix(p, "static/")] = asset{body: b, etag: `"` + hex.EncodeToString(sum[:8]) + `"`, ctype: contentType(p)}
		return nil
	})
	if err != nil {
		panic(fmt.Sprintf("web: index embedded static files: %v", err))
	}
	funcs := template.FuncMap{"asset": h.assetURL, "dn": breakDN, "visible": visible}
	h.pages = make(map[string]*template.Template, len(pageNames))
	for _, name := range pageNames {
		t := template.New("layout.html").Funcs(funcs)
		h.pages[name] = template.Must(t.ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html"))
	}
	return h
}

func contentType(p string) string {
	switch path.Ext(p) {
	case ".css":
		return "text/css; charset=utf-8"
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	case ".png":
		return "image/png"
	}
	return "application/octet-stream"
}

// assetURL names a static file with its hash, so a browser never runs a stale script
// against a newer page after an upgrade.
func (h *Handler) assetURL(name string) (string, error) {
	a, ok := h.assets[name]
	if !ok {
		return "", fmt.Errorf("no static file %q", name)
	}
	return "/static/" + name + "?v=" + strings.Trim(a.etag, `"`), nil
}

// Register mounts the UI's routes on mux, beside the API's. Only these patterns are
// claimed, so unknown paths keep the mux's own 404 and 405 answers.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.Handle("GET /{$}", h.wrap(h.home))
	mux.Handle("GET /login", h.wrap(h.loginPage))
	mux.Handle("POST /login", h.wrap(h.login))
	mux.Handle("POST /logout", h.wrap(h.logout))
	mux.Handle("GET /certs", h.wrap(h.list))
	mux.Handle("GET /certs/new", h.wrap(h.newForm))
	mux.Handle("GET /certs/{id}/edit", h.wrap(h.editForm))
	mux.Handle("GET /certs/{id}/delete", h.wrap(h.deletePage))
	mux.Handle("GET /certs/{id}/history", h.wrap(h.history))
	mux.Handle("GET /audit", h.wrap(h.auditPage))
	mux.Handle("GET /docs", h.wrap(h.docs))
	mux.Handle("GET /static/{file}", h.wrap(h.static))
}

// ServeHTTP serves the UI on its own, for tests and for embedding under another router.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	mux := http.NewServeMux()
	h.Register(mux)
	mux.ServeHTTP(w, r)
}

// wrap adds the security headers every UI response carries. Pages and redirects are never
// stored by a browser or proxy cache: they show a signed-in user's catalogue or carry the
// session cookie. Static files set their own caching.
func (h *Handler) wrap(fn http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Cache-Control", "no-store")
		hd.Set("Content-Security-Policy", ContentSecurityPolicy)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		fn(w, r)
	})
}

func (h *Handler) now() time.Time {
	if h.cfg.Now != nil {
		return h.cfg.Now()
	}
	return time.Now()
}

// static serves an embedded file. The content hash is the ETag, so a revalidation costs
// one 304 and an upgrade is picked up at once.
func (h *Handler) static(w http.ResponseWriter, r *http.Request) {
	a, ok := h.assets[r.PathValue("file")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", a.ctype)
	w.Header().Set("ETag", a.etag)
	if r.URL.Query().Get("v") == strings.Trim(a.etag, `"`) {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}

// view is what every template receives.
type view struct {
	Title string
	// Page names the view for app.js (body data-page).
	Page string
	// Nav marks the header link of the current section.
	Nav  string
	User *auth.Principal
	// CanEdit is true for editors and admins: it shows create, edit and delete.
	CanEdit bool
	Data    any
}

// render writes a page. Rendering goes to a buffer first so a template error becomes a
// clean 500 rather than half a page.
func (h *Handler) render(w http.ResponseWriter, r *http.Request, status int, name string, v view) {
	var buf bytes.Buffer
	if err := h.pages[name].ExecuteTemplate(&buf, "layout", v); err != nil {
		h.internalError(w, r, fmt.Errorf("render %s page: %w", name, err))
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// errorData is the error page's content.
type errorData struct {
	Heading   string
	Message   string
	RequestID string
}

// errorPage renders a page that explains a refusal or failure in words.
func (h *Handler) errorPage(w http.ResponseWriter, r *http.Request, status int, user *auth.Principal, msg string) {
	h.render(w, r, status, "error", view{Title: http.StatusText(status), Page: "error", User: user,
		Data: errorData{Heading: http.StatusText(status), Message: msg}})
}

// internalError logs err with the request id the API middleware assigned and shows the
// id, never err itself, to the user.
func (h *Handler) internalError(w http.ResponseWriter, r *http.Request, err error) {
	id := w.Header().Get("X-Request-Id")
	h.log.Error("web page failed", "request_id", id, "path", r.URL.Path, "err", err)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusInternalServerError)
	var buf bytes.Buffer
	data := view{Title: "Error", Page: "error", Data: errorData{Heading: "Something went wrong",
		Message: "The page could not be shown. The server log has the details.", RequestID: id}}
	if h.pages["error"].ExecuteTemplate(&buf, "layout", data) == nil {
		_, _ = w.Write(buf.Bytes())
	}
}
