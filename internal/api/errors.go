package api

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/loopze/certstore/internal/catalog"
	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/kdf"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/workspace"
)

// ErrorBody is the one error shape of the API: {"error": "<status text>", "message": ...},
// plus the field problems of a validation failure or the references that block a delete.
// It replaces Huma's default model for every failure, Huma's own validation included.
type ErrorBody struct {
	status int

	Title      string         `json:"error" doc:"HTTP status text" example:"Unprocessable Entity"`
	Message    string         `json:"message" doc:"What went wrong, for people" example:"validation failed"`
	Errors     []*ErrorDetail `json:"errors,omitempty" doc:"Each problem with the field it is about"`
	References []Reference    `json:"references,omitempty" doc:"Deployed nodes that still reference the entry (409 on delete or type change)"`
	// TotalReferences is set only when References was cut short.
	TotalReferences int    `json:"totalReferences,omitempty" doc:"How many references there are in all, when the list above is truncated; page through GET /api/v1/certs/{id}/references"`
	RequestID       string `json:"requestId,omitempty" doc:"Set on internal errors, to find the log line"`
}

// ErrorDetail names one problem and where it is.
type ErrorDetail struct {
	Location string `json:"location" doc:"Where the problem is, e.g. body.certPem" example:"body.keyPem"`
	Message  string `json:"message" example:"private key does not match the certificate's public key"`
	// FlowID, NodeID, NodeType and Field locate a problem of a workspace deploy.
	FlowID   string `json:"flowId,omitempty" doc:"Workspace deploys: the flow of the problem" example:"ingest-line-1"`
	NodeID   string `json:"nodeId,omitempty" doc:"Workspace deploys: the node of the problem" example:"tcp-out-3"`
	NodeType string `json:"nodeType,omitempty" doc:"Workspace deploys: the node's type" example:"tcp-out"`
	Field    string `json:"field,omitempty" doc:"Workspace deploys: the field, relative to the node" example:"tls.caBundleRef"`
}

// ErrorDetail lets details pass through huma.NewError unchanged.
func (d *ErrorDetail) ErrorDetail() *huma.ErrorDetail {
	return &huma.ErrorDetail{Location: d.Location, Message: d.Message}
}

// Error implements error.
func (d *ErrorDetail) Error() string { return d.Location + ": " + d.Message }

// Reference is one place a deployed node uses an entry.
type Reference struct {
	FlowID   string `json:"flowId" example:"ingest-line-1"`
	NodeID   string `json:"nodeId" example:"tcp-out-3"`
	NodeType string `json:"nodeType" example:"tcp-out"`
	Field    string `json:"field" example:"tls.caBundleRef"`
}

// Error implements error, so an ErrorBody can be returned from handlers.
func (e *ErrorBody) Error() string { return e.Message }

// GetStatus implements huma.StatusError.
func (e *ErrorBody) GetStatus() int { return e.status }

func init() {
	// Huma builds every error it reports (bad JSON, schema violations, 413) through
	// NewError: route them all into our shape, keeping Huma's status codes. Details keep
	// their location and message but never the offending value, which may be PEM.
	huma.NewError = func(status int, msg string, errs ...error) huma.StatusError {
		b := &ErrorBody{status: status, Title: http.StatusText(status), Message: msg}
		for _, err := range errs {
			if err == nil {
				continue
			}
			if d, ok := err.(huma.ErrorDetailer); ok {
				hd := d.ErrorDetail()
				b.Errors = append(b.Errors, &ErrorDetail{Location: hd.Location, Message: hd.Message})
				continue
			}
			b.Errors = append(b.Errors, &ErrorDetail{Message: err.Error()})
		}
		if b.Message == "" {
			b.Message = http.StatusText(status)
		}
		return b
	}
}

// newError builds an ErrorBody for handlers.
func newError(status int, msg string, details ...*ErrorDetail) *ErrorBody {
	return &ErrorBody{status: status, Title: http.StatusText(status), Message: msg, Errors: details}
}

// mapError turns domain errors into HTTP errors: the one place that decides status codes,
// for every route.
// Anything unexpected is logged with the request id and answered 500 without detail.
func (s *Server) mapError(ctx context.Context, err error) error {
	var (
		ve  *catalog.ValidationError
		wve *workspace.ValidationError
		re  *catalog.ReferencedError
	)
	switch {
	case errors.As(err, &wve):
		details := make([]*ErrorDetail, 0, len(wve.Issues))
		for _, is := range wve.Issues {
			details = append(details, &ErrorDetail{Location: "body." + is.Path(), Message: is.String(),
				FlowID: is.FlowID, NodeID: is.NodeID, NodeType: is.NodeType, Field: is.Field})
		}
		return newError(http.StatusUnprocessableEntity, "the workspace is not valid; nothing was deployed", details...)
	case errors.Is(err, workspace.ErrNodeNotFound):
		return newError(http.StatusNotFound, "no such flow or node in the saved workspace")
	case errors.Is(err, workspace.ErrConcurrentChange):
		return newError(http.StatusConflict, "an entry this workspace references was deleted while it was deployed; deploy again")
	case errors.Is(err, catalog.ErrUnknownVersion):
		return newError(http.StatusNotFound, "no such version of this cert in this tenant")
	case errors.As(err, &ve):
		details := make([]*ErrorDetail, 0, len(ve.Issues))
		for _, is := range ve.Issues {
			details = append(details, &ErrorDetail{Location: "body." + is.Field, Message: is.Message})
		}
		return newError(http.StatusUnprocessableEntity, "the entry is not valid", details...)
	case errors.As(err, &re):
		b := newError(http.StatusConflict, "cert is still referenced by deployed nodes")
		b.References = toReferences(re.References)
		if re.Total > len(re.References) {
			b.TotalReferences = re.Total
		}
		return b
	case errors.Is(err, repo.ErrNotFound):
		return newError(http.StatusNotFound, "no such cert in this tenant")
	case errors.Is(err, repo.ErrDuplicate):
		return newError(http.StatusConflict, "a cert with this ID already exists")
	case errors.Is(err, repo.ErrInvalidData):
		s.deps.Logger.Warn("request refused by the database as invalid data", "request_id", RequestID(ctx), "err", err)
		return newError(http.StatusUnprocessableEntity, "a value in the request cannot be stored (for example a NUL character)")
	case errors.Is(err, repo.ErrVersionMismatch):
		return newError(http.StatusPreconditionFailed, "it has changed since the ETag given in If-Match (or If-None-Match holds); GET it again")
	case errors.Is(err, kdf.ErrBusy):
		return busyError(err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return newError(http.StatusServiceUnavailable, "request cancelled")
	case db.Unavailable(err):
		// A failover, a restart or a pooler without a server: nothing the request did
		// wrong, and worth a retry.
		s.deps.Logger.Warn("database unavailable", "request_id", RequestID(ctx), "err", err)
		return newError(http.StatusServiceUnavailable, "the database is unavailable; retry shortly")
	}
	id := RequestID(ctx)
	s.deps.Logger.Error("request failed", "request_id", id, "err", err)
	b := newError(http.StatusInternalServerError, "internal error; see the server log for request "+id)
	b.RequestID = id
	return b
}

// busyError answers a request refused by the key derivation budget: 503 with Retry-After,
// the whole seconds the budget suggests. Nothing was judged or saved; the same request
// later may succeed.
func busyError(err error) error {
	retry := time.Second
	var be *kdf.BusyError
	if errors.As(err, &be) {
		retry = be.RetryAfter
	}
	secs := max(1, int(math.Ceil(retry.Seconds())))
	return huma.ErrorWithHeaders(
		newError(http.StatusServiceUnavailable, "the server is busy deriving keys from passphrases; retry after the seconds in Retry-After"),
		http.Header{"Retry-After": {strconv.Itoa(secs)}})
}

// metaDerives marks an operation whose material may need key derivation (an encrypted key,
// a PKCS#12): it can be refused by the server's derivation budget with 503 and Retry-After.
const metaDerives = "derives"

// derives marks op with metaDerives.
func derives(op huma.Operation) huma.Operation {
	if op.Metadata == nil {
		op.Metadata = map[string]any{}
	}
	op.Metadata[metaDerives] = true
	return op
}

// busyHeaders are the headers documented on the 503 of an operation that derives keys.
func busyHeaders() map[string]*huma.Param {
	return map[string]*huma.Param{"Retry-After": {
		Description: "With a full key derivation budget: seconds after which the request is likely to be admitted",
		Schema:      &huma.Schema{Type: huma.TypeInteger, Format: "int32", Minimum: ptr(1.0), Maximum: ptr(86400.0)}}}
}
