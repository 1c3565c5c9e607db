package web

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/loopze/certstore/internal/audit"
	"github.com/loopze/certstore/internal/auth"
	"github.com/loopze/certstore/internal/catalog"
	"github.com/loopze/certstore/internal/repo"
)

// History is what the History section reads; *catalog.Service implements it.
type History interface {
	Versions(ctx context.Context, tenant, id string, before int64, limit int) ([]repo.VersionSummary, bool, error)
}

// AuditLog is what the Audit page reads; *audit.Service implements it.
type AuditLog interface {
	List(ctx context.Context, tenant string, f repo.AuditFilter) ([]*repo.AuditRecord, bool, error)
}

// historyPageSize is how many versions the History section shows at once.
const historyPageSize = 50

// auditPageSize is how many records one Audit page shows.
const auditPageSize = 100

// versionRow is one version as the History section shows it: metadata, who and when.
type versionRow struct {
	Version, EntryVersion, RestoredFrom int64
	Action                              string
	Fingerprint, FingerprintShort       string
	Type, Name                          string
	NotAfter, ChangedAt                 time.Time
	ChangedBy                           string
}

// historyData is the History page's content.
type historyData struct {
	ID string
	// Entry is the entry as it is now; nil when it is deleted.
	Entry    *row
	Version  int64
	Rows     []versionRow
	Next     string
	Restored int64
}

func (h *Handler) history(w http.ResponseWriter, r *http.Request) {
	p := h.requireSession(w, r)
	if p == nil {
		return
	}
	id := r.PathValue("id")
	if !catalog.ValidID(id) || h.cfg.History == nil {
		h.errorPage(w, r, http.StatusNotFound, p, "There is no certificate with that ID.")
		return
	}
	q := r.URL.Query()
	before, _ := strconv.ParseInt(q.Get("before"), 10, 64)
	d := historyData{ID: id}
	d.Restored, _ = strconv.ParseInt(q.Get("restored"), 10, 64)
	e, err := h.cfg.Catalog.Get(r.Context(), p.Tenant, id)
	switch {
	case err == nil:
		rw := toRow(e, h.now())
		d.Entry, d.Version = &rw, e.Version
	case !errors.Is(err, repo.ErrNotFound):
		h.internalError(w, r, err)
		return
	}
	vs, more, err := h.cfg.History.Versions(r.Context(), p.Tenant, id, max(before, 0), historyPageSize)
	if errors.Is(err, repo.ErrNotFound) {
		h.errorPage(w, r, http.StatusNotFound, p, "There is no certificate with the ID "+id+", and no history of one.")
		return
	}
	if err != nil {
		h.internalError(w, r, err)
		return
	}
	for _, v := range vs {
		d.Rows = append(d.Rows, versionRow{Version: v.Version, EntryVersion: v.EntryVersion, RestoredFrom: v.RestoredFrom,
			Action: v.Action, Fingerprint: v.FingerprintSHA256, FingerprintShort: shortFingerprint(v.FingerprintSHA256),
			Type: string(v.Type), Name: v.Name, NotAfter: v.NotAfter.UTC(), ChangedAt: v.ChangedAt.UTC(), ChangedBy: v.ChangedBy})
	}
	if more && len(vs) > 0 {
		d.Next = "/certs/" + id + "/history?before=" + strconv.FormatInt(vs[len(vs)-1].Version, 10)
	}
	h.render(w, r, http.StatusOK, "history", view{Title: "History of " + id, Page: "history", Nav: "certs",
		User: p, CanEdit: p.Role.Allows(auth.Editor), Data: d})
}

// auditRow is one record as the Audit page shows it.
type auditRow struct {
	Seq                                 int64
	Time                                time.Time
	Subject, Role, Action, Target       string
	FingerprintBefore, FingerprintAfter string
	RequestID, ClientAddr, Detail       string
}

// auditData is the Audit page's content.
type auditData struct {
	Rows                    []auditRow
	Actions                 []string
	Action, Target, Subject string
	Next                    string
}

func (h *Handler) auditPage(w http.ResponseWriter, r *http.Request) {
	p := h.requireSession(w, r)
	if p == nil {
		return
	}
	if !p.Role.Allows(auth.Admin) {
		h.errorPage(w, r, http.StatusForbidden, p, "The audit trail needs the admin role; you are signed in as "+p.Role.String()+".")
		return
	}
	if h.cfg.Audit == nil {
		h.errorPage(w, r, http.StatusNotFound, p, "The audit trail is not available here.")
		return
	}
	q := r.URL.Query()
	d := auditData{Actions: audit.Actions, Action: q.Get("action"), Target: clip(q.Get("target")), Subject: clip(q.Get("subject"))}
	if !slices.Contains(audit.Actions, d.Action) {
		d.Action = ""
	}
	before, _ := strconv.ParseInt(q.Get("before"), 10, 64)
	f := repo.AuditFilter{Action: d.Action, Target: d.Target, Subject: d.Subject, Before: max(before, 0), Limit: auditPageSize}
	var (
		recs []*repo.AuditRecord
		more bool
		err  error
	)
	if storableText(d.Target) && storableText(d.Subject) {
		recs, more, err = h.cfg.Audit.List(r.Context(), p.Tenant, f)
	}
	if err != nil {
		h.internalError(w, r, err)
		return
	}
	for _, rec := range recs {
		d.Rows = append(d.Rows, auditRow{Seq: rec.Seq, Time: rec.At.UTC(), Subject: rec.Subject, Role: rec.Role,
			Action: rec.Action, Target: rec.Target, FingerprintBefore: shortFingerprint(rec.FingerprintBefore),
			FingerprintAfter: shortFingerprint(rec.FingerprintAfter), RequestID: rec.RequestID, ClientAddr: rec.ClientAddr,
			Detail: rec.Detail})
	}
	if more && len(recs) > 0 {
		nq := q
		nq.Set("before", strconv.FormatInt(recs[len(recs)-1].Seq, 10))
		d.Next = "/audit?" + nq.Encode()
	}
	h.render(w, r, http.StatusOK, "audit", view{Title: "Audit trail", Page: "audit", Nav: "audit",
		User: p, CanEdit: p.Role.Allows(auth.Editor), Data: d})
}

// clip bounds a filter typed into the page.
func clip(s string) string {
	if len(s) > 200 {
		return s[:200]
	}
	return s
}

// storableText reports whether PostgreSQL can compare with s as text.
func storableText(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }
