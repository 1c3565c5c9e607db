package web

import (
	"errors"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"strings"
	"time"
	"unicode"

	"github.com/loopze/certstore/internal/auth"
	"github.com/loopze/certstore/internal/catalog"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/repo"
)

// pageSize is how many entries one list page shows.
const pageSize = 200

// soonDays is the horizon of the "expires soon" badge.
const soonDays = 30

// maxShownReferences bounds the references the delete page lists; the count says how
// many there are in all.
const maxShownReferences = 1000

// visible shows text as it reads: characters that would make it display otherwise (bidi
// overrides, line separators, control characters but tab and line breaks) become escapes
// such as \u202E. Entries saved before names and notes refused them may still hold them,
// and a certificate's subject may hold anything.
func visible(s string) string {
	hidden := func(r rune) bool {
		return (unicode.IsControl(r) && r != '\n' && r != '\r' && r != '\t') || catalog.Deceptive(r)
	}
	if !strings.ContainsFunc(s, hidden) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if hidden(r) {
			fmt.Fprintf(&b, "\\u%04X", r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// breakDN lets a distinguished name wrap after its commas rather than inside words.
func breakDN(dn string) template.HTML {
	parts := strings.Split(visible(dn), ",")
	for i, p := range parts {
		parts[i] = template.HTMLEscapeString(p)
	}
	return template.HTML(strings.Join(parts, ",<wbr>"))
}

// Types are the entry types in the order the UI offers them.
var Types = []material.Kind{material.CABundle, material.ClientPair, material.ServerPair}

// row is one entry as the list shows it: metadata only, never material.
type row struct {
	ID, Name, Type, Source, Notes string
	material.Metadata
	FingerprintShort string
	Expired, Soon    bool
	DaysLeft         int
	References       int
}

// listData is the Certificates page's content.
type listData struct {
	Rows      []row
	Q, Type   string
	Types     []material.Kind
	Next      string
	Filtered  bool
	Flash     string
	FlashKind string
}

func toRow(e *repo.Entry, now time.Time) row {
	left := e.Meta.NotAfter.Sub(now)
	days := int(math.Floor(left.Hours() / 24))
	return row{
		ID: e.ID, Name: e.Name, Type: string(e.Type), Source: e.Source, Notes: e.Notes,
		Metadata: e.Meta.InUTC(), FingerprintShort: shortFingerprint(e.Meta.FingerprintSHA256),
		Expired: left < 0, Soon: left >= 0 && left < soonDays*24*time.Hour, DaysLeft: days,
		References: e.RefCount,
	}
}

// shortFingerprint keeps the first and last three bytes of an "AB:CD:..." fingerprint:
// enough to tell entries apart at a glance; the full one is on hover and copyable.
func shortFingerprint(fp string) string {
	const keep = 3*3 - 1 // three bytes, three characters each but the last colon
	if len(fp) <= 2*keep+1 {
		return fp
	}
	return fp[:keep] + "…" + fp[len(fp)-keep:]
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	p := h.requireSession(w, r)
	if p == nil {
		return
	}
	q := r.URL.Query()
	d := listData{Q: strings.TrimSpace(q.Get("q")), Type: q.Get("type"), Types: Types}
	if !material.Kind(d.Type).Valid() {
		d.Type = ""
	}
	if len(d.Q) > 200 {
		d.Q = d.Q[:200]
	}
	d.Filtered = d.Q != "" || d.Type != ""
	for _, k := range []string{"created", "updated", "deleted"} {
		if id := q.Get(k); catalog.ValidID(id) {
			d.Flash, d.FlashKind = k, id
		}
	}
	f := repo.ListFilter{Type: d.Type, Search: d.Q, Limit: pageSize, After: q.Get("after")}
	entries, more, err := h.cfg.Catalog.List(r.Context(), p.Tenant, f)
	if err != nil {
		h.internalError(w, r, err)
		return
	}
	now := h.now()
	for _, e := range entries {
		d.Rows = append(d.Rows, toRow(e, now))
	}
	if more && len(entries) > 0 {
		nq := q
		nq.Del("created")
		nq.Del("updated")
		nq.Del("deleted")
		nq.Set("after", entries[len(entries)-1].ID)
		d.Next = "/certs?" + nq.Encode()
	}
	h.render(w, r, http.StatusOK, "list", view{Title: "Certificates", Page: "list", Nav: "certs",
		User: p, CanEdit: p.Role.Allows(auth.Editor), Data: d})
}

// formData is the new and edit form's content: the entry's fields, never its material.
type formData struct {
	Edit     bool
	ID       string
	Name     string
	Type     string
	Source   string
	Notes    string
	CertPath string
	KeyPath  string
	// PassphraseFile is a file entry's passphrase file path.
	PassphraseFile string
	Version        int64
	Types          []material.Kind
	// Metadata describes the stored material on the edit form.
	material.Metadata
}

// requireEditor returns the user when they may change entries; otherwise it answers.
func (h *Handler) requireEditor(w http.ResponseWriter, r *http.Request) *auth.Principal {
	p := h.requireSession(w, r)
	if p == nil {
		return nil
	}
	if !p.Role.Allows(auth.Editor) {
		h.errorPage(w, r, http.StatusForbidden, p,
			"Changing certificates needs the editor role or higher; you are signed in as "+p.Role.String()+".")
		return nil
	}
	return p
}

func (h *Handler) newForm(w http.ResponseWriter, r *http.Request) {
	p := h.requireEditor(w, r)
	if p == nil {
		return
	}
	d := formData{Type: string(material.CABundle), Source: "inline", Types: Types}
	if t := r.URL.Query().Get("type"); material.Kind(t).Valid() {
		d.Type = t
	}
	h.render(w, r, http.StatusOK, "form", view{Title: "New certificate", Page: "form", Nav: "certs",
		User: p, CanEdit: true, Data: d})
}

// entry loads the entry named in the path, answering 404 or 500 itself when it cannot.
func (h *Handler) entry(w http.ResponseWriter, r *http.Request, p *auth.Principal) *repo.Entry {
	id := r.PathValue("id")
	if !catalog.ValidID(id) {
		h.errorPage(w, r, http.StatusNotFound, p, "There is no certificate with that ID.")
		return nil
	}
	e, err := h.cfg.Catalog.Get(r.Context(), p.Tenant, id)
	if errors.Is(err, repo.ErrNotFound) {
		h.errorPage(w, r, http.StatusNotFound, p, "There is no certificate with the ID "+id+" (it may have been deleted).")
		return nil
	}
	if err != nil {
		h.internalError(w, r, err)
		return nil
	}
	return e
}

func (h *Handler) editForm(w http.ResponseWriter, r *http.Request) {
	p := h.requireEditor(w, r)
	if p == nil {
		return
	}
	e := h.entry(w, r, p)
	if e == nil {
		return
	}
	d := formData{Edit: true, ID: e.ID, Name: e.Name, Type: string(e.Type), Source: e.Source, Notes: e.Notes,
		CertPath: e.CertPath, KeyPath: e.KeyPath, PassphraseFile: e.PassphrasePath, Version: e.Version, Types: Types,
		Metadata: e.Meta.InUTC()}
	h.render(w, r, http.StatusOK, "form", view{Title: "Edit " + e.ID, Page: "form", Nav: "certs",
		User: p, CanEdit: true, Data: d})
}

// deleteData is the delete page's content: the entry and what still references it.
type deleteData struct {
	Row        row
	Version    int64
	References []repo.Reference
	Total      int
}

func (h *Handler) deletePage(w http.ResponseWriter, r *http.Request) {
	p := h.requireEditor(w, r)
	if p == nil {
		return
	}
	e := h.entry(w, r, p)
	if e == nil {
		return
	}
	refs, total, err := h.cfg.Catalog.References(r.Context(), p.Tenant, e.ID, nil, maxShownReferences)
	if err != nil && !errors.Is(err, repo.ErrNotFound) {
		h.internalError(w, r, err)
		return
	}
	d := deleteData{Row: toRow(e, h.now()), Version: e.Version, References: refs, Total: total}
	h.render(w, r, http.StatusOK, "delete", view{Title: "Delete " + e.ID, Page: "delete", Nav: "certs",
		User: p, CanEdit: true, Data: d})
}

// docs serves the API reference, which app code renders from /openapi.json in the
// browser: no renderer from a CDN, so it works offline.
func (h *Handler) docs(w http.ResponseWriter, r *http.Request) {
	p, _ := h.session(r)
	h.render(w, r, http.StatusOK, "docs", view{Title: "API reference", Page: "docs", Nav: "docs", User: p,
		CanEdit: p != nil && p.Role.Allows(auth.Editor)})
}
