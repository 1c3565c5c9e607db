package api

import (
	"net/http"
	"slices"
	"strconv"

	"github.com/danielgtaylor/huma/v2"
)

// describeDocument fills in what the document says of itself: where the API is served,
// who answers for it, and what each tag groups.
func describeDocument(o *huma.OpenAPI) {
	o.Info.Contact = &huma.Contact{Name: "LOOPZE certificate store maintainers"}
	o.Servers = []*huma.Server{{URL: "/",
		Description: "The server that serves this document: production or local (make run: http://127.0.0.1:8080)",
		// Operators and flow nodes on the plant network call it, not the public.
		Extensions: map[string]any{"x-internal": true}}}
	o.Tags = []*huma.Tag{
		{Name: "certificates", Description: "The tenant's catalogue of CA bundles, client pairs and server pairs"},
		{Name: "flows", Description: "The tenant's deployed workspace and what its nodes' TLS resolves to"},
		{Name: "health", Description: "Liveness and readiness probes, open to anyone"},
		{Name: "history", Description: "Every version an entry had, and restoring one"},
		{Name: "audit", Description: "The tenant's tamper-evident record of changes"},
	}
}

// defineTags lists in the document's tags any tag an operation uses that
// describeDocument does not know yet, so that every tag is defined.
func defineTags(o *huma.OpenAPI, op *huma.Operation) {
	for _, name := range op.Tags {
		if !slices.ContainsFunc(o.Tags, func(t *huma.Tag) bool { return t.Name == name }) {
			o.Tags = append(o.Tags, &huma.Tag{Name: name, Description: "Operations about " + name})
		}
	}
}

// declareCommon documents the answers every operation of a kind can give, whoever
// registered it: 415 where there is a request body (Huma refuses another media type); the
// rate limit's headers, 429 and 503 (no database, or authentication not configured, or,
// with Retry-After, a full key derivation budget where the operation derives) where a
// token is required; 201 beside a 200 that carries Location, since such an operation
// (EntrySavedOutput) answers 201 when it created the entry. It runs after every route is
// registered.
func declareCommon(api huma.API) {
	for _, item := range api.OpenAPI().Paths {
		for _, op := range []*huma.Operation{item.Get, item.Put, item.Post, item.Delete, item.Patch} {
			if op == nil {
				continue
			}
			if op.RequestBody != nil {
				declareError(api, op, http.StatusUnsupportedMediaType, nil)
			}
			if len(op.Security) > 0 {
				declareRateLimit(api, op)
				if op.Metadata[metaDerives] == true {
					declareError(api, op, http.StatusServiceUnavailable, busyHeaders())
				}
				declareError(api, op, http.StatusServiceUnavailable, nil)
			}
			declareCreated(op)
			defineTags(api.OpenAPI(), op)
			boundResponseHeaders(op)
		}
	}
}

// declareCreated documents the 201 of an operation whose 200 carries Location: the same
// body and headers, for the answer that created the resource.
func declareCreated(op *huma.Operation) {
	ok := op.Responses["200"]
	if ok == nil || ok.Headers["Location"] == nil || op.Responses["201"] != nil {
		return
	}
	created := *ok
	created.Description = "Created: there was no such entry, so it was created"
	op.Responses["201"] = &created
}

// declareError adds an error response in the API's error shape to op, with headers.
func declareError(api huma.API, op *huma.Operation, code int, headers map[string]*huma.Param) {
	key := strconv.Itoa(code)
	if op.Responses == nil {
		op.Responses = map[string]*huma.Response{}
	}
	if _, ok := op.Responses[key]; ok {
		return
	}
	op.Responses[key] = &huma.Response{
		Description: http.StatusText(code),
		Headers:     headers,
		Content: map[string]*huma.MediaType{"application/json": {
			Schema: &huma.Schema{Ref: "#/components/schemas/ErrorBody"}}},
	}
}

// maxHeaderLen bounds the response headers the server writes (ETag, Location, RateLimit and
// the like are all far shorter).
const maxHeaderLen = 1024

// boundResponseHeaders gives every string response header of op its bound.
func boundResponseHeaders(op *huma.Operation) {
	for _, r := range op.Responses {
		for _, h := range r.Headers {
			if h.Schema != nil && h.Schema.Type == huma.TypeString && h.Schema.MaxLength == nil {
				h.Schema.MaxLength = ptr(maxHeaderLen)
			}
		}
	}
}
